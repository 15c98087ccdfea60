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

// A Web Push message from tocsin (delivery's push channel, format web_push): the JSON the
// server encrypted to this browser — {id, title, body, url, priority, reference, ack_url}.
self.addEventListener("push", (event) => {
  let m = {};
  try {
    m = event.data ? event.data.json() : {};
  } catch (_) {
    m = { title: event.data ? event.data.text() : "tocsin" };
  }
  const actions = m.ack_url ? [{ action: "ack", title: "Acknowledge" }] : [];
  event.waitUntil(
    self.registration.showNotification(m.title || "tocsin", {
      body: m.body || "",
      tag: m.id || undefined,
      icon: "/app/static/icon-192.png",
      badge: "/app/static/icon-192.png",
      requireInteraction: m.priority >= 5,
      data: { url: m.url || null, ack_url: m.ack_url || null, id: m.id || null },
      actions,
    }),
  );
});

// "Acknowledge" posts the notification's signed link (no session needed: the link is the
// authority); a click elsewhere opens what the notification links to, or the inbox.
self.addEventListener("notificationclick", (event) => {
  const n = event.notification;
  const data = n.data || {};
  n.close();
  if (event.action === "ack" && data.ack_url) {
    event.waitUntil(
      fetch(data.ack_url, { method: "POST", credentials: "omit" }).then((r) =>
        self.registration.showNotification(r.ok ? "Acknowledged" : "Not acknowledged", {
          body: r.ok ? "No further escalation will be sent." : `The server answered ${r.status}; open the inbox.`,
          tag: data.id ? `ack-${data.id}` : undefined,
          icon: "/app/static/icon-192.png",
        }),
      ),
    );
    return;
  }
  const target = data.url && /^https?:/.test(data.url) ? data.url : "/app/";
  event.waitUntil(self.clients.openWindow(target));
});
