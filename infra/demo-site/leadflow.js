/* leadflow's first-party tracker: a tiny Segment-compatible client for the demo site.
 *
 * <script src="leadflow.js" data-write-key="..." data-collector="http://127.0.0.1:8088"></script>
 *
 * It keeps an anonymous id per browser (localStorage), sends a page view on load with the
 * page and UTM context, and exposes leadflow.identify(userId, traits) and
 * leadflow.track(event, properties). Every call carries a messageId (the idempotency key),
 * a timestamp and sentAt, so the collector can correct clock skew; failed sends are retried.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var writeKey = script.getAttribute("data-write-key");
  var collector = (script.getAttribute("data-collector") || "").replace(/\/$/, "");
  var storage = window.localStorage;

  function uuid() {
    if (window.crypto && window.crypto.randomUUID) { return window.crypto.randomUUID(); }
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
    });
  }

  function anonymousId() {
    var id = storage.getItem("leadflow.anonymousId");
    if (!id) { id = uuid(); storage.setItem("leadflow.anonymousId", id); }
    return id;
  }

  function campaign() {
    var params = new URLSearchParams(window.location.search);
    var c = {};
    [["utm_source", "source"], ["utm_medium", "medium"], ["utm_campaign", "name"],
     ["utm_term", "term"], ["utm_content", "content"]].forEach(function (pair) {
      var value = params.get(pair[0]);
      if (value) { c[pair[1]] = value; }
    });
    if (Object.keys(c).length) { storage.setItem("leadflow.campaign", JSON.stringify(c)); }
    var stored = storage.getItem("leadflow.campaign");
    return stored ? JSON.parse(stored) : undefined;
  }

  function context() {
    return {
      page: {
        url: window.location.href,
        path: window.location.pathname,
        referrer: document.referrer || undefined,
        title: document.title
      },
      campaign: campaign(),
      userAgent: navigator.userAgent,
      library: { name: "leadflow.js", version: "0.1.0" }
    };
  }

  var pending = 0;
  function send(path, message, attempt) {
    attempt = attempt || 0;
    message.messageId = message.messageId || uuid();
    message.anonymousId = anonymousId();
    var userId = storage.getItem("leadflow.userId");
    if (userId && !message.userId) { message.userId = userId; }
    message.timestamp = message.timestamp || new Date().toISOString();
    message.sentAt = new Date().toISOString();
    message.context = context();
    pending += 1;
    document.documentElement.setAttribute("data-leadflow-pending", String(pending));
    return fetch(collector + path, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "Authorization": "Basic " + btoa(writeKey + ":")
      },
      body: JSON.stringify(message),
      keepalive: true
    }).then(function (response) {
      if ((response.status === 429 || response.status >= 500) && attempt < 5) {
        var wait = Number(response.headers.get("Retry-After") || 1) * 1000;
        return new Promise(function (resolve) { setTimeout(resolve, wait); })
          .then(function () { return send(path, message, attempt + 1); });
      }
      return response;
    }).finally(function () {
      pending -= 1;
      document.documentElement.setAttribute("data-leadflow-pending", String(pending));
      document.documentElement.setAttribute("data-leadflow-sent", String(
        Number(document.documentElement.getAttribute("data-leadflow-sent") || 0) + 1));
    });
  }

  window.leadflow = {
    page: function (name, properties) {
      return send("/v1/page", { type: "page", name: name, properties: properties || {} });
    },
    // userId is optional: without one, leadflow derives the lead id from the email trait,
    // so a marketing site need not know (or expose) the CRM's ids.
    identify: function (userId, traits) {
      var message = { type: "identify", traits: traits || {} };
      if (userId) { storage.setItem("leadflow.userId", userId); message.userId = userId; }
      return send("/v1/identify", message);
    },
    track: function (event, properties) {
      return send("/v1/track", { type: "track", event: event, properties: properties || {} });
    },
    anonymousId: anonymousId
  };

  window.leadflow.page(document.title);
})();
