// The SRE page: every REFRESH_MS it reads GET /api/v1/cluster (which merges the
// raft-nodes' admin status) and shows shards with their leader, members by region,
// each member's applied index and lag, and the leader changes seen so far.
"use strict";

(() => {
  const { api, el, show, say } = SeatLedger;
  const $ = (id) => document.getElementById(id);

  const REFRESH_MS = 1000;
  // A follower this many entries behind its leader is marked as lagging.
  const LAG_WARN_ENTRIES = 100;

  let timer = null;
  let busy = false;

  function node(id) {
    return id === null || id === undefined ? "none" : `node ${id}`;
  }

  function memberCell(member, leader) {
    const classes = ["pill"];
    if (!member.reachable) classes.push("down");
    else if (member.id === leader) classes.push("leader");
    else if (member.lag !== null && member.lag > LAG_WARN_ENTRIES) classes.push("lagging");
    const lag = member.lag === null || member.lag === undefined ? "" : `, lag ${member.lag}`;
    const applied = member.applied_index === null ? "" : `, applied ${member.applied_index}`;
    return el("li", { "data-member": member.id },
      el("span", { class: classes.join(" ") },
        `node ${member.id} (${member.region}): ${member.state}${applied}${lag}`));
  }

  function render(data) {
    $("gathered").textContent = `Updated ${new Date(data.gathered_at).toLocaleTimeString()}; ` +
      `refreshes every second.`;
    $("shards").replaceChildren(...data.shards.map((shard) => el("tr", {
      "data-shard": shard.shard, "data-leader": shard.leader === null ? "" : shard.leader,
    },
    el("th", { scope: "row" }, shard.shard),
    el("td", { class: "leader" }, shard.leader === null ? "no leader"
      : `${node(shard.leader)} (${shard.leader_region || "?"})`),
    el("td", {}, shard.term),
    el("td", {}, shard.committed_index === null ? "?" : shard.committed_index),
    el("td", {}, el("ul", { class: "legend" },
      shard.members.map((member) => memberCell(member, shard.leader)))))));

    const regions = new Map();
    for (const n of data.nodes) {
      if (!regions.has(n.region)) regions.set(n.region, []);
      regions.get(n.region).push(n);
    }
    $("regions").replaceChildren(...[...regions.entries()].sort().map(([region, nodes]) =>
      el("div", { class: "region", "data-region": region },
        el("h3", {}, region || "(no region)"),
        el("ul", {}, nodes.map((n) => el("li", { "data-node": n.id },
          `${node(n.id)} at ${n.address}: `,
          el("span", { class: n.reachable ? "pill leader" : "pill down" },
            n.reachable ? "up" : `unreachable (${n.error})`),
          n.leads.length ? ` leads ${n.leads.join(", ")}` : " leads nothing"))))));

    $("changes").replaceChildren(...(data.leader_changes.length ? data.leader_changes.map((c) =>
      el("tr", { "data-shard": c.shard },
        el("td", {}, new Date(c.at).toLocaleTimeString()),
        el("td", {}, c.shard), el("td", {}, node(c.from)), el("td", {}, node(c.to)),
        el("td", {}, c.term)))
      : [el("tr", {}, el("td", { colspan: 5 }, "No leader change seen yet."))]));
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const { data } = await api("GET", "/api/v1/cluster");
      say($("cluster-message"), "");
      render(data);
    } catch (error) {
      if (error.status === 403) {
        say($("cluster-message"), "This page is for SRE and admin accounts; " +
          "log in with one of those.", "error");
      } else {
        say($("cluster-message"), `Could not read the cluster's status: ${error.message}`, "error");
      }
    } finally {
      busy = false;
    }
  }

  function start() {
    stop();
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
  }

  document.addEventListener("DOMContentLoaded", () => {
    SeatLedger.wireAccount({
      forms: "account-forms", bar: "account-bar", who: "account-who",
      loginForm: "login-form", logout: "logout", message: "account-message",
    }, (session) => {
      show($("cluster-view"), Boolean(session));
      if (session) start();
      else stop();
    });
    document.body.dataset.ready = "true";
  });
})();
