// stsgate admin: small progressive enhancements. Every page works without this file.
//  - forms with data-confirm ask before submitting;
//  - the policy editor refreshes its preview while you type.
"use strict";

document.addEventListener("submit", function (event) {
  var form = event.target;
  var message = form.getAttribute && form.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

(function () {
  var form = document.getElementById("policy-editor");
  var result = document.getElementById("preview-result");
  if (!form || !result || !window.fetch || !window.URLSearchParams) {
    return;
  }
  var url = form.getAttribute("data-preview-url");
  var timer = null;
  var seq = 0;

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
