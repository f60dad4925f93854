// The console's only script: refresh each panel, keep the invocation filter in the URL,
// and send the actions. No framework, nothing to build.
"use strict";

function filterQuery() {
  const params = new URLSearchParams();
  const handler = document.getElementById("filter-handler");
  const correlation = document.getElementById("filter-correlation");
  if (handler && handler.value) params.set("handler", handler.value);
  if (correlation && correlation.value.trim()) params.set("correlation_id", correlation.value.trim());
  return params;
}

// A panel is not replaced while the page is hidden, or while someone types in a field of it;
// a new filter replaces it at once (`now`).
async function refresh(panel, now = false) {
  const typing = panel.contains(document.activeElement) &&
    ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (!now && (document.hidden || typing)) return;
  const query = panel.dataset.filtered ? "?" + filterQuery().toString() : "";
  // Answers may come back out of order: only the newest request's answer is shown.
  const generation = String(Number(panel.dataset.generation || 0) + 1);
  panel.dataset.generation = generation;
  try {
    const answer = await fetch(`/panels/${panel.dataset.panel}${query}`, { cache: "no-store" });
    const html = await answer.text();
    if (!answer.ok || panel.dataset.generation !== generation) return;
    const opened = [...panel.querySelectorAll("details[open]")].map((d) => d.querySelector("summary")?.textContent);
    panel.innerHTML = html;
    panel.querySelectorAll("details").forEach((d) => {
      if (opened.includes(d.querySelector("summary")?.textContent)) d.open = true;
    });
    panel.dataset.refreshed = String(Date.now());
  } catch (e) {
    // the stack is stopping: the next tick tries again
  }
}

function applyFilter() {
  const params = filterQuery();
  const url = params.toString() ? `/?${params}#invocations` : "/#invocations";
  history.replaceState(null, "", url);
  document.querySelectorAll("[data-filtered]").forEach((panel) => refresh(panel, true));
}

async function act(form) {
  const result = document.getElementById("action-result");
  const body = Object.fromEntries(new FormData(form).entries());
  result.textContent = `${form.dataset.action}: working…`;
  result.className = "result";
  try {
    const answer = await fetch(`/actions/${form.dataset.action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await answer.json();
    result.textContent = JSON.stringify(data, null, 2);
    result.className = answer.ok ? "result ok" : "result failed";
    if (answer.ok && data.correlation_id) {
      document.getElementById("filter-correlation").value = data.correlation_id;
      applyFilter();
    }
  } catch (e) {
    result.textContent = `${form.dataset.action} failed: ${e}`;
    result.className = "result failed";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-panel]").forEach((panel) => {
    const every = Number(panel.dataset.every || 3) * 1000;
    setInterval(() => refresh(panel), every);
  });
  const filter = document.getElementById("invocation-filter");
  if (filter) {
    filter.addEventListener("submit", (e) => { e.preventDefault(); applyFilter(); });
    document.getElementById("filter-handler").addEventListener("change", applyFilter);
    document.getElementById("filter-clear").addEventListener("click", () => {
      document.getElementById("filter-handler").value = "";
      document.getElementById("filter-correlation").value = "";
      applyFilter();
    });
  }
  // A correlation id or handler link inside the invocations: filter in place.
  document.addEventListener("click", (e) => {
    const link = e.target.closest("a.correlation");
    if (link && filter) {
      e.preventDefault();
      document.getElementById("filter-correlation").value = link.dataset.correlation;
      applyFilter();
    }
  });
  document.querySelectorAll("form.action").forEach((form) => {
    form.addEventListener("submit", (e) => { e.preventDefault(); act(form); });
  });
  const examples = document.getElementById("test-examples");
  const handler = document.getElementById("test-handler");
  const body = document.getElementById("test-body");
  if (examples && handler && body) {
    const byHandler = JSON.parse(examples.textContent);
    const hint = document.getElementById("test-hint");
    const fill = () => {
      const example = byHandler[handler.value] || { body: "{}", hint: "" };
      body.value = example.body;
      hint.textContent = example.hint;
    };
    handler.addEventListener("change", fill);
    fill();
  }
  // An execution still running: redrawn until it ends.
  const execution = document.getElementById("execution");
  if (execution && execution.dataset.status === "RUNNING") setTimeout(() => location.reload(), 1000);
});
