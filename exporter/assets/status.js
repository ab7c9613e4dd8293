<script>
(function () {
  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
  function n(v) { return v === null || v === undefined ? "\u2013" : String(v); }
  function secs(v) { return v === null || v === undefined ? "\u2013" : v.toFixed(1) + " s"; }
  function meta(m) { return Object.keys(m).map(function (k) { return k + "=" + m[k]; }).join(", "); }
  function draw(data) {
    document.getElementById("taken").textContent = data.taken_at ? "as of " + data.taken_at : "waiting for the first listing";
    document.getElementById("error").textContent = data.error || "";
    var body = document.querySelector("#summary tbody");
    body.replaceChildren();
    var members = document.getElementById("members");
    members.replaceChildren();
    data.groups.forEach(function (g) {
      var tr = el("tr"); tr.dataset.group = g.group;
      tr.append(el("td", g.group), el("td", n(g.up), "up"), el("td", n(g.down), "down"), el("td", n(g.forced_down), "forced"),
                el("td", n(g.total)), el("td", secs(g.oldest_up_age_seconds)), el("td", g.error || "", "error"));
      body.append(tr);
      if (g.members.length === 0) return;
      var sec = el("section"); sec.dataset.group = g.group;
      sec.append(el("h2", g.group + ": down and forced down"));
      var t = el("table", undefined, "members");
      var head = el("tr");
      ["member", "state", "last heartbeat", "age", "instance", "metadata"].forEach(function (h) { head.append(el("th", h)); });
      var thead = el("thead"); thead.append(head); t.append(thead);
      var tb = el("tbody");
      g.members.forEach(function (m) {
        var r = el("tr", undefined, m.state); r.dataset.member = m.member; r.dataset.state = m.state;
        var inst = el("td"); inst.append(el("code", m.instance));
        r.append(el("td", m.member), el("td", m.state), el("td", m.last_heartbeat || "\u2013"), el("td", secs(m.age_seconds)), inst, el("td", meta(m.metadata)));
        tb.append(r);
      });
      t.append(tb); sec.append(t);
      if (g.pages > 1) {
        var pager = el("p", "page " + g.page + " of " + g.pages, "pager");
        [["previous", g.page - 1], ["next", g.page + 1]].forEach(function (l) {
          if (l[1] < 1 || l[1] > g.pages) return;
          var a = el("a", l[0]); a.href = "?" + new URLSearchParams({ group: g.group, page: String(l[1]) });
          pager.append(" ", a);
        });
        sec.append(pager);
      }
      members.append(sec);
    });
    document.body.dataset.updated = String(Date.now());
  }
  function poll() {
    fetch("status.json" + location.search, { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(draw)
      .catch(function (e) { document.getElementById("error").textContent = "cannot reach the exporter: " + e.message; });
  }
  setInterval(poll, 2000);
})();
</script>
