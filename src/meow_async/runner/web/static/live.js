// meow_async live view: keeps a server-rendered page current from the runner's event stream
// (view/events, Server-Sent Events). Plain JavaScript, no build step, no library. Every value
// from the runner is set with textContent: text, never markup.
const body = document.body;
const root = body.dataset.root || "./";
const page = body.dataset.page;
const badge = document.getElementById("live");
const ENDED = ["done", "failed", "skipped"];

function when(t) {
  return typeof t === "number" ? new Date(t * 1000).toISOString().slice(0, 19).replace("T", " ") : "";
}

function cell(cls, text) {
  const td = document.createElement("td");
  td.className = cls;
  td.textContent = text;
  return td;
}

function row(j) {
  const tr = document.createElement("tr");
  tr.id = "job-" + j.id;
  tr.dataset.id = j.id;
  tr.className = "state-" + j.state;
  const link = document.createElement("a");
  link.href = root + "view/job/" + encodeURIComponent(j.id);
  link.textContent = j.id;
  const id = cell("id", "");
  id.appendChild(link);
  const took = typeof j.started === "number" && typeof j.finished === "number"
    ? Math.max(0, j.finished - j.started).toFixed(2) + "s" : "";
  tr.append(cell("state", j.state), id, cell("rule", j.rule), cell("trigger", j.trigger),
    cell("made", when(j.created)), cell("took", took),
    cell("exit", j.exit_code === null || j.exit_code === undefined ? "" : String(j.exit_code)));
  return tr;
}

function wanted(j) {
  const rule = body.dataset.rule, state = body.dataset.state;
  return (!rule || rule === j.rule) && (!state || state === j.state);
}

function upsert(j) {
  const tbody = document.querySelector("#jobs tbody");
  if (!tbody) return;
  const old = document.getElementById("job-" + j.id);
  if (!wanted(j)) {
    if (old) old.remove();
    return;
  }
  const fresh = row(j);
  if (old) {
    // the made time and trigger of a row the server rendered stay as they are
    if (j.created === null) fresh.querySelector(".made").replaceWith(old.querySelector(".made"));
    old.replaceWith(fresh);
  } else {
    fresh.classList.add("new");
    tbody.prepend(fresh);
    const limit = Number(body.dataset.limit || 100);
    while (tbody.rows.length > limit) tbody.deleteRow(-1);
  }
}

async function reloadRows() {
  // After a reconnect (a runner restart, a dropped stream): what changed meanwhile.
  const url = new URL(location.href);
  url.searchParams.set("fragment", "rows");
  const resp = await fetch(url, { credentials: "same-origin" });
  if (!resp.ok) return;
  const tbody = document.querySelector("#jobs tbody");
  const doc = new DOMParser().parseFromString("<table>" + await resp.text() + "</table>", "text/html");
  const rows = doc.querySelector("tbody");
  if (tbody && rows) tbody.replaceWith(document.adoptNode(rows));
}

let recount = null;
function recountSoon() {
  // The rules page: its counts again, at most every 2 seconds while jobs change.
  if (recount !== null) return;
  recount = setTimeout(async () => {
    recount = null;
    const resp = await fetch(location.href, { credentials: "same-origin" });
    if (!resp.ok) return;
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    const fresh = doc.querySelector("#rules tbody");
    const tbody = document.querySelector("#rules tbody");
    if (tbody && fresh) tbody.replaceWith(document.adoptNode(fresh));
  }, 2000);
}

let tailing = null;
async function tail() {
  const resp = await fetch(root + "view/job/" + encodeURIComponent(body.dataset.job) + "/tail",
    { credentials: "same-origin" });
  if (!resp.ok) return;
  const got = await resp.json();
  for (const name of ["stdout.txt", "stderr.txt", "process.log"]) {
    const pre = document.getElementById("log-" + name);
    if (pre && typeof got[name] === "string") pre.textContent = got[name];
  }
  if (!got.running && tailing !== null) {
    clearInterval(tailing);
    location.reload();
  }
}

function connect() {
  const url = new URL(root + "view/events", location.href);
  if (page === "job") url.searchParams.set("job", body.dataset.job);
  const events = new EventSource(url);
  let opened = false;
  events.addEventListener("hello", () => {
    badge.textContent = "live";
    badge.className = "live on";
    if (opened && page === "jobs") reloadRows();
    if (opened && page === "job") location.reload();
    if (opened && page === "rules") recountSoon();
    opened = true;
  });
  events.addEventListener("job", (e) => {
    const j = JSON.parse(e.data);
    if (page === "jobs") upsert(j);
    else if (page === "rules") recountSoon();
    else if (page === "job" && j.id === body.dataset.job && j.state !== body.dataset.state) {
      location.reload();
    }
  });
  events.onerror = () => {
    badge.textContent = "reconnecting…";
    badge.className = "live off";
  };
}

if (page === "jobs" || page === "job" || page === "rules") connect();
if (page === "job" && body.dataset.state === "running") tailing = setInterval(tail, 1000);
