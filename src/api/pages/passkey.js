// Passkeys on the hosted pages: the only script they load (CSP `script-src 'self'`).
// A button with `data-passkey="create"` or `"get"` runs the WebAuthn ceremony whose options
// its form carries (`data-options`, JSON with base64url members), puts the browser's answer
// into the form's `passkey_credential` field as JSON, and submits the form. Without WebAuthn
// (or without this script) the buttons stay hidden and every other way to sign in works.
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  function bytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var raw = atob(b64);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out.buffer;
  }

  function text(buffer) {
    var view = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < view.length; i++) raw += String.fromCharCode(view[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map(function (c) {
      return Object.assign({}, c, { id: bytes(c.id) });
    });
  }

  function creation(options) {
    var pk = Object.assign({}, options.publicKey);
    pk.challenge = bytes(pk.challenge);
    pk.user = Object.assign({}, pk.user, { id: bytes(pk.user.id) });
    pk.excludeCredentials = withIds(pk.excludeCredentials);
    return { publicKey: pk };
  }

  function request(options) {
    var pk = Object.assign({}, options.publicKey);
    pk.challenge = bytes(pk.challenge);
    pk.allowCredentials = withIds(pk.allowCredentials);
    return { publicKey: pk };
  }

  function answer(credential) {
    var r = credential.response;
    var out = {
      id: credential.id,
      rawId: text(credential.rawId),
      type: credential.type,
      extensions: {},
      response: { clientDataJSON: text(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      out.response.attestationObject = text(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = text(r.authenticatorData);
      out.response.signature = text(r.signature);
      out.response.userHandle = r.userHandle ? text(r.userHandle) : null;
    }
    return out;
  }

  document.querySelectorAll("button[data-passkey]").forEach(function (button) {
    var form = button.form;
    var status = form.querySelector("[data-passkey-status]");
    button.hidden = false;
    button.addEventListener("click", function (event) {
      event.preventDefault();
      var options = JSON.parse(form.getAttribute("data-options"));
      var ceremony = button.getAttribute("data-passkey") === "create"
        ? navigator.credentials.create(creation(options))
        : navigator.credentials.get(request(options));
      button.disabled = true;
      if (status) status.hidden = true;
      ceremony.then(function (credential) {
        form.elements.passkey_credential.value = JSON.stringify(answer(credential));
        form.submit();
      }).catch(function () {
        button.disabled = false;
        if (status) {
          status.textContent = "The passkey was not used. Try again, or use another way.";
          status.hidden = false;
        }
      });
    });
  });
})();
