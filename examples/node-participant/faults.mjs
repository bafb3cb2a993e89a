// Which orders fail, decided by the order id alone, by the same rule as the Python demo's
// fault plan, so that a test knows every saga's outcome in advance.
import { createHash } from 'node:crypto';

const SERVICES = ['payment', 'stock', 'delivery'];

// The service that fails `orderId` with a business failure, or null.
export function failingService(orderId, rate) {
  const digest = createHash('sha256').update(orderId, 'utf8').digest();
  // The first 8 bytes as an unsigned 64-bit integer, over 2**64. Number(BigInt) rounds to the
  // nearest double and dividing by a power of two is exact, as Python's int / int is.
  if (Number(digest.readBigUInt64BE(0)) / 2 ** 64 >= rate) return null;
  return SERVICES[digest[8] % 3];
}
