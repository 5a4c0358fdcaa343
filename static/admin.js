// stsgate admin: small progressive enhancements. Every page works without this file.
//  - forms with data-confirm ask before submitting;
//  - the policy editor refreshes its preview while you type, and marks the fields at fault;
//  - copy buttons on the integration card (the text stays selectable without them).
"use strict";

document.addEventListener("submit", function (event) {
  var form = event.target;
  var message = form.getAttribute && form.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

(function () {
  var buttons = document.querySelectorAll("button.copy[data-copy]");
  if (!navigator.clipboard) {
    return;
  }
  Array.prototype.forEach.call(buttons, function (button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(target.textContent).then(function () {
        var label = button.textContent;
        button.textContent = "Copied";
        window.setTimeout(function () {
          button.textContent = label;
        }, 1500);
      });
    });
  });
})();

(function () {
  var form = document.getElementById("policy-editor");
  var result = document.getElementById("preview-result");
  if (!form || !result || !window.fetch || !window.URLSearchParams) {
    return;
  }
  var url = form.getAttribute("data-preview-url");
  var timer = null;
  var seq = 0;

  // Marks the fields named in the fragment's hidden error list (as the page does after a
  // submit), replacing the marks of the previous refresh.
  function mark() {
    Array.prototype.forEach.call(form.querySelectorAll(".field-error"), function (e) {
      e.parentNode.removeChild(e);
    });
    Array.prototype.forEach.call(form.querySelectorAll(".invalid"), function (e) {
      e.classList.remove("invalid");
    });
    // The "Not saved" notice of an earlier submit goes once the draft has no error left.
    var items = result.querySelectorAll(".live-errors li");
    var stale = document.querySelector("main > .alert[role=alert]");
    if (stale && items.length === 0) {
      stale.hidden = true;
    }
    Array.prototype.forEach.call(items, function (li) {
      var name = li.getAttribute("data-field");
      var statement = /^st(\d+)_statement$/.exec(name);
      var where = statement
        ? form.querySelector("#st-" + statement[1] + " > legend")
        : form.querySelector("[name='" + name + "']");
      if (!where) {
        return;
      }
      var error = document.createElement("span");
      error.className = "field-error";
      error.textContent = li.textContent;
      if (!statement) {
        where.classList.add("invalid");
      }
      where.insertAdjacentElement("afterend", error);
    });
  }

  function refresh() {
    var body = new URLSearchParams(new FormData(form));
    body.set("op", "preview");
    var mine = ++seq;
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: body.toString(),
    })
      .then(function (res) {
        return res.ok ? res.text() : null;
      })
      .then(function (html) {
        // Only the newest answer counts. The fragment is rendered (and escaped) by the server.
        if (html !== null && mine === seq) {
          result.innerHTML = html;
          mark();
        }
      })
      .catch(function () {});
  }

  form.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 350);
  });
  form.addEventListener("change", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 150);
  });
})();
