// The flow monitor: the token, the views behind the address (#/machines, #/machine/NAME,
// #/sagas?..., #/saga/ID), and polling the visible view.

import { ApiError, get, setToken, token, whenUnauthorized } from "./api.js";
import { fill } from "./dom.js";
import { machinesView } from "./machines.js";
import { sagaView } from "./saga.js";
import { sagasView } from "./sagas.js";

const POLL_MS = 1500;

const $ = (id) => document.getElementById(id);

/** The view the address asks for. */
function route() {
  const hash = location.hash.replace(/^#/, "") || "/machines";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  if (path.startsWith("/saga/")) {
    return { nav: "sagas", create: () => sagaView(decodeURIComponent(path.slice(6))) };
  }
  if (path.startsWith("/machine/")) {
    return { nav: "machines", create: () => machinesView(decodeURIComponent(path.slice(9))) };
  }
  if (path === "/sagas") {
    return { nav: "sagas", create: () => sagasView(params) };
  }
  return { nav: "machines", create: () => machinesView() };
}

function showProblem(error) {
  const box = $("problem");
  if (error) {
    box.textContent = error instanceof ApiError ? error.message : `The page failed: ${error}`;
    box.hidden = false;
  } else {
    box.hidden = true;
  }
}

function stamp() {
  const now = new Date();
  $("updated").textContent = `updated ${now.toLocaleTimeString()}`;
}

// The wait between two refreshes; `wake()` ends it early (the tab was shown again).
let wake = () => {};
const pause = (ms) =>
  new Promise((resolve) => {
    wake = resolve;
    setTimeout(resolve, ms);
  });

// Each shown view gets a generation number; the loop of an older one stops at its next turn.
let generation = 0;

async function show() {
  const mine = ++generation;
  const chosen = route();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.nav === chosen.nav);
  }
  const view = chosen.create();
  document.title = `${view.title} · Sagawire`;
  fill($("view"), view.element);
  while (mine === generation) {
    if (!document.hidden) {
      try {
        await view.refresh();
        if (mine === generation) {
          showProblem(null);
          stamp();
        }
      } catch (error) {
        if (mine === generation) {
          showProblem(error);
        }
      }
    }
    await pause(POLL_MS);
  }
}

function stop() {
  generation += 1;
}

// -- the token ------------------------------------------------------------------------------

function askForToken(detail) {
  stop();
  fill($("view"));
  $("login").hidden = false;
  // A first visit has no token yet: nothing was refused.
  $("login-problem").textContent =
    detail && token() ? `The gateway refused the token: ${detail}` : "";
  $("scope").textContent = "";
  $("token").focus();
}

async function start() {
  try {
    const who = await get("/v1/whoami");
    $("login").hidden = true;
    $("scope").textContent = who.auth ? `${who.scope} token` : "no authentication (--no-auth)";
    $("scope").dataset.scope = who.scope;
    $("change-token").hidden = !who.auth;
    show();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      showProblem(error);
    }
  }
}

whenUnauthorized(askForToken);

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken($("token").value.trim());
  $("token").value = "";
  start();
});
$("token-forget").addEventListener("click", () => {
  setToken(null);
  askForToken("");
});
$("change-token").addEventListener("click", () => askForToken(""));
window.addEventListener("hashchange", () => {
  if ($("login").hidden) {
    show();
  }
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && $("login").hidden) {
    wake(); // refresh at once, not at the end of the wait
  }
});

start();
