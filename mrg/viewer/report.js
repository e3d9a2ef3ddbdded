/* mrg report: sorting, filtering and paging of the per-study tables. Without this script every row shows. */
(function () {
  "use strict";
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function enhance(table) {
    var controls = document.querySelector('.controls[data-for="' + table.id + '"]');
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var textColumns = [];
    headers.forEach(function (th, i) {
      if (th.hasAttribute("data-search")) textColumns.push(i);
    });
    rows.forEach(function (row) {
      row._search = textColumns.map(function (i) { return row.cells[i].textContent; }).join("\n").toLowerCase();
      var dis = row.getAttribute("data-dis");
      row._dis = dis ? dis.split("|") : [];
    });
    var state = { query: "", onlyDis: false, obs: "", pageSize: 0, page: 0, col: -1, dir: 1 };
    var ordered = rows.slice();
    var search = controls.querySelector("input[type=search]");
    var onlyDis = controls.querySelector(".only-dis");
    var obsFilter = controls.querySelector(".obs-filter");
    var pageSize = controls.querySelector(".page-size");
    var count = controls.querySelector(".count");
    var pageLabel = controls.querySelector(".page");
    var prev = controls.querySelector(".prev");
    var next = controls.querySelector(".next");

    function matches(row) {
      if (state.onlyDis && row._dis.length === 0) return false;
      if (state.obs && row._dis.indexOf(state.obs) < 0) return false;
      if (!state.query) return true;
      var words = state.query.split(/\s+/);
      for (var i = 0; i < words.length; i++) if (words[i] && row._search.indexOf(words[i]) < 0) return false;
      return true;
    }

    function render() {
      var shown = ordered.filter(matches);
      var size = state.pageSize > 0 ? state.pageSize : shown.length || 1;
      var pages = Math.max(1, Math.ceil(shown.length / size));
      state.page = Math.min(state.page, pages - 1);
      var start = state.page * size, end = Math.min(shown.length, start + size);
      var onPage = new Set(shown.slice(start, end));
      ordered.forEach(function (row) { row.classList.toggle("hidden-row", !onPage.has(row)); });
      count.textContent = shown.length === rows.length
        ? "showing " + (shown.length ? start + 1 : 0) + "\u2013" + end + " of " + rows.length + " studies"
        : "showing " + (shown.length ? start + 1 : 0) + "\u2013" + end + " of " + shown.length + " matching (" + rows.length + " studies)";
      pageLabel.textContent = "page " + (state.page + 1) + " / " + pages;
      prev.disabled = state.page === 0;
      next.disabled = state.page >= pages - 1;
    }

    function sortBy(col) {
      state.dir = state.col === col ? -state.dir : 1;
      state.col = col;
      var numeric = headers[col].getAttribute("data-type") === "num";
      var keyed = rows.map(function (row, index) {
        var cell = row.cells[col];
        var key = numeric ? parseFloat(cell.getAttribute("data-v")) : cell.textContent;
        return { row: row, key: key, index: index };
      });
      keyed.sort(function (a, b) {
        var c;
        if (numeric) {
          var an = isNaN(a.key), bn = isNaN(b.key);
          if (an || bn) return an === bn ? a.index - b.index : an ? 1 : -1; /* blanks last either way */
          c = a.key - b.key;
        } else {
          c = collator.compare(a.key, b.key);
        }
        return c !== 0 ? c * state.dir : a.index - b.index;
      });
      ordered = keyed.map(function (k) { return k.row; });
      var fragment = document.createDocumentFragment();
      ordered.forEach(function (row) { fragment.appendChild(row); });
      tbody.appendChild(fragment);
      headers.forEach(function (th, i) {
        if (th.hasAttribute("aria-sort")) th.setAttribute("aria-sort", i === col ? (state.dir > 0 ? "ascending" : "descending") : "none");
      });
      state.page = 0;
      render();
    }

    headers.forEach(function (th, i) {
      if (th.classList.contains("nosort")) return;
      var button = document.createElement("button");
      button.type = "button";
      while (th.firstChild) button.appendChild(th.firstChild);
      button.title = (th.title ? th.title + "; " : "") + "sort by this column";
      th.appendChild(button);
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", function () { sortBy(i); });
    });

    var timer = null;
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.query = search.value.trim().toLowerCase(); state.page = 0; render(); }, 120);
    });
    onlyDis.addEventListener("change", function () { state.onlyDis = onlyDis.checked; state.page = 0; render(); });
    obsFilter.addEventListener("change", function () { state.obs = obsFilter.value; state.page = 0; render(); });
    pageSize.addEventListener("change", function () { state.pageSize = parseInt(pageSize.value, 10) || 0; state.page = 0; render(); });
    prev.addEventListener("click", function () { state.page = Math.max(0, state.page - 1); render(); });
    next.addEventListener("click", function () { state.page += 1; render(); });
    state.pageSize = parseInt(pageSize.value, 10) || 0;
    controls.hidden = false;
    render();
    table.classList.add("ready");
  }

  document.querySelectorAll("table.studies").forEach(function (table) {
    try {
      enhance(table);
    } catch (err) {
      table.classList.add("ready"); /* show every row rather than a first page that cannot be left */
      throw err;
    }
  });
})();
