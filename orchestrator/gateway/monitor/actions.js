// Operator actions: each asks for confirmation in a dialog, then shows the API's verdict.

import { ApiError, post } from "./api.js";
import { fill, h } from "./dom.js";

/**
 * Ask before acting: resolves to {reason} on Confirm, null on Cancel or Escape.
 */
export function confirmAction(title, text) {
  const dialog = document.getElementById("confirm");
  const reason = document.getElementById("confirm-reason");
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  reason.value = "";
  return new Promise((resolve) => {
    const done = (answer) => {
      ok.removeEventListener("click", yes);
      cancel.removeEventListener("click", no);
      dialog.removeEventListener("cancel", no);
      if (dialog.open) {
        dialog.close();
      }
      resolve(answer);
    };
    const yes = () => done({ reason: reason.value.trim() || null });
    const no = () => done(null);
    ok.addEventListener("click", yes);
    cancel.addEventListener("click", no);
    dialog.addEventListener("cancel", no); // Escape
    dialog.showModal();
    cancel.focus();
  });
}

/**
 * Confirm, POST `path` with `body` plus the reason, and write the outcome into `verdict`:
 * `describe(answer)` on success, the status and the gateway's detail on failure.
 */
export async function act({ title, text, path, body = {}, verdict, describe, buttons = [] }) {
  const confirmed = await confirmAction(title, text);
  if (confirmed === null) {
    return null;
  }
  for (const button of buttons) {
    button.disabled = true;
  }
  verdict.className = "verdict pending";
  verdict.dataset.outcome = "pending";
  fill(verdict, `${title}: waiting for the verdict…`);
  try {
    const answer = await post(path, { ...body, reason: confirmed.reason });
    verdict.className = "verdict ok";
    verdict.dataset.outcome = "applied";
    delete verdict.dataset.http;
    fill(verdict, h("strong", {}, `${title}: applied. `), describe(answer));
    return answer;
  } catch (error) {
    if (!(error instanceof ApiError)) {
      throw error;
    }
    verdict.className = "verdict bad";
    verdict.dataset.outcome = "refused";
    verdict.dataset.http = String(error.status);
    fill(verdict, h("strong", {}, `${title}: refused. `), error.message);
    return null;
  } finally {
    for (const button of buttons) {
      button.disabled = false;
    }
  }
}
