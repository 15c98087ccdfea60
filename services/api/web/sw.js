// tocsin's service worker: makes the app installable, and shows Web Push notifications.
// Pages are never cached: they are live views of your notifications.
"use strict";

self.addEventListener("install", (event) => {
  self.skipWaiting();
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

// the network, always; offline, a short page that says so
self.addEventListener("fetch", (event) => {
  if (event.request.mode !== "navigate") {
    return;
  }
  event.respondWith(
    fetch(event.request).catch(
      () =>
        new Response(
          "<!doctype html><meta charset=utf-8><title>Offline</title><p>tocsin is out of reach: you are offline, or the server is down.</p>",
          { headers: { "Content-Type": "text/html; charset=utf-8" } },
        ),
    ),
  );
});
