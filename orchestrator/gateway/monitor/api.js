// The gateway's HTTP API, called with the bearer token this browser tab was given.

const TOKEN_KEY = "sagawire.monitor.token";

const STATUS_TEXT = {
  0: "no answer",
  401: "401 Unauthorized",
  403: "403 Forbidden",
  404: "404 Not found",
  409: "409 Refused",
  422: "422 Invalid",
  503: "503 Unavailable",
  504: "504 No verdict in time",
};

/** A request the gateway refused or could not answer: `status` 0 when it was not reached. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(`${STATUS_TEXT[status] || status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  } else {
    sessionStorage.removeItem(TOKEN_KEY);
  }
}

let unauthorized = () => {};

/** `handler(detail)` runs whenever the gateway answers 401 (no token, or one it does not know). */
export function whenUnauthorized(handler) {
  unauthorized = handler;
}

// FastAPI's validation errors are a list of {loc, msg}; Sagawire's own are a string.
function describe(detail) {
  if (typeof detail === "string") {
    return detail;
  }
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return JSON.stringify(detail);
}

async function problemOf(response) {
  try {
    return describe((await response.json()).detail);
  } catch {
    return response.statusText || "no detail";
  }
}

/** The answer as JSON (or text, with `text: true`); `ApiError` when it is not a success. */
export async function request(method, path, { body, text = false } = {}) {
  const headers = { Accept: text ? "*/*" : "application/json" };
  const bearer = token();
  if (bearer) {
    headers.Authorization = `Bearer ${bearer}`;
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, `the gateway cannot be reached (${error.message})`);
  }
  if (!response.ok) {
    const detail = await problemOf(response);
    if (response.status === 401) {
      unauthorized(detail);
    }
    throw new ApiError(response.status, detail);
  }
  return text ? response.text() : response.json();
}

export const get = (path) => request("GET", path);
export const getText = (path) => request("GET", path, { text: true });
export const post = (path, body = {}) => request("POST", path, { body });

/** A path with its query: `withQuery("/v1/sagas", {machine: "order", status: ["a", "b"]})`. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined && one !== null && one !== "" && one !== false) {
        query.append(name, String(one));
      }
    }
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export const enc = encodeURIComponent;
