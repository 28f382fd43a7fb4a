// Live updates for the hookd status page (Server-Sent Events from GET /live).
// Loaded with `defer`; no inline code anywhere (CSP script-src 'self'). Without
// JavaScript, or without EventSource, every page keeps its "Refresh" link.
(function () {
  "use strict";
  if (!("EventSource" in window)) return;

  var tables = document.querySelectorAll("tbody[data-live]");
  var runPage = document.querySelector("[data-live-run]");
  var replayWait = document.querySelector("[data-replay-wait]");
  var source = tables[0] || runPage || replayWait;
  if (!source) return;

  var params = new URLSearchParams();
  params.set("after", source.getAttribute("data-live"));
  if (tables.length === 1) {
    var flow = tables[0].getAttribute("data-live-flow");
    var status = tables[0].getAttribute("data-live-status");
    if (flow) params.set("flow", flow);
    if (status) params.set("status", status);
  }
  if (runPage) params.set("watch", runPage.getAttribute("data-live-run"));

  function rowFrom(html) {
    var holder = document.createElement("tbody");
    holder.innerHTML = html;  // server-rendered, escaped by the template engine
    return holder.firstElementChild;
  }

  function place(kind, data) {
    tables.forEach(function (tbody) {
      if (tbody.getAttribute("data-live-kind") !== kind) return;
      var row = rowFrom(data.html);
      if (!row) return;
      var existing = tbody.querySelector("#" + CSS.escape(row.id));
      if (existing) {
        existing.replaceWith(row);
      } else {
        tbody.insertBefore(row, tbody.firstElementChild);
        row.classList.add("fresh");
        var limit = 50;
        while (tbody.children.length > limit) tbody.removeChild(tbody.lastElementChild);
      }
      var empty = tbody.closest(".scroll");
      empty = empty && empty.nextElementSibling;
      if (empty && empty.hasAttribute("data-empty")) empty.remove();
    });
  }

  var events = new EventSource("/live?" + params.toString());
  events.addEventListener("open", function () {
    document.querySelectorAll(".live-on").forEach(function (el) { el.hidden = false; });
    document.documentElement.setAttribute("data-live-connected", "");
  });
  events.addEventListener("delivery", function (e) {
    place("delivery", JSON.parse(e.data));
  });
  events.addEventListener("run", function (e) {
    var data = JSON.parse(e.data);
    place("run", data);
    if (runPage && data.id === runPage.getAttribute("data-live-run") &&
        data.status !== runPage.getAttribute("data-live-status")) {
      window.location.reload();
    }
    if (replayWait && data.delivery === replayWait.getAttribute("data-replay-wait")) {
      window.location.assign("/runs/" + encodeURIComponent(data.id));
    }
  });
})();
