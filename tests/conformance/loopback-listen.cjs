// Preloaded (node --require) into server-everything by run.sh.
// server-everything calls app.listen(PORT) with no host, which binds every
// interface. This forces a host-less listen() onto EVERYTHING_HOST
// (default 127.0.0.1) so the test server is reachable on loopback only.
"use strict";
const net = require("node:net");
const host = process.env.EVERYTHING_HOST || "127.0.0.1";
const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function patchedListen(...args) {
  if ((typeof args[0] === "number" || typeof args[0] === "string") &&
      /^\d+$/.test(String(args[0])) &&
      (args.length === 1 || typeof args[1] === "function")) {
    args.splice(1, 0, host);
  }
  return origListen.apply(this, args);
};
