// macpool dashboard: progressive enhancement only. Every page works without this file.
"use strict";

// The map's side panel: a click on a cell shows who has the address without leaving the map.
function panel() {
  const aside = document.getElementById("panel");
  if (!aside) return;
  document.querySelectorAll(".grid a.cell[data-mac]").forEach((cell) => {
    cell.addEventListener("click", async (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
      ev.preventDefault();
      document.querySelectorAll(".grid a.selected").forEach((c) => c.classList.remove("selected"));
      cell.classList.add("selected");
      const res = await fetch("/mac/" + encodeURIComponent(cell.dataset.mac) + "/panel", {
        credentials: "same-origin",
      });
      if (!res.ok) {
        aside.textContent = "Could not load " + cell.dataset.mac + " (" + res.status + ")";
        return;
      }
      // same-origin HTML rendered (and escaped) by the server
      aside.innerHTML = await res.text();
      wireCopy(aside);
    });
  });
}

// Copy buttons: copy the MAC spelling next to them.
function wireCopy(root) {
  root.querySelectorAll("button.copy[data-copy]").forEach((b) => {
    b.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(b.dataset.copy);
        b.textContent = "copied";
      } catch (e) {
        b.textContent = "select and copy";
      }
    });
  });
}

// The conflicts page refreshes its count (and the tab title) every 10 s, and reloads when the
// count changes.
function poll() {
  const live = document.querySelector("[data-poll]");
  const badge = document.getElementById("conflict-count");
  if (!live || !badge) return;
  const url = live.dataset.poll;
  setInterval(async () => {
    try {
      const res = await fetch(url, { credentials: "same-origin" });
      if (!res.ok) return;
      const { count } = await res.json();
      if (String(count) !== badge.dataset.count) {
        window.location.reload();
      }
    } catch (e) {
      /* offline for a moment: try again next time */
    }
  }, 10000);
}

document.addEventListener("DOMContentLoaded", () => {
  panel();
  wireCopy(document);
  poll();
});
