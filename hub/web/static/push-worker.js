// Web Push for the Anmin family page: show the hub's notice; a tap opens the incident.
"use strict";
self.addEventListener("push", (event) => {
  let data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = { message: event.data && event.data.text() }; }
  const title = data.title || "Anmin";
  event.waitUntil(self.registration.showNotification(title, {
    body: data.text || data.message || "",
    tag: data.incident || "anmin",
    renotify: true,
    requireInteraction: true,
    data: { url: data.url || "/console/family" },
  }));
});
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(self.clients.openWindow(event.notification.data.url));
});
