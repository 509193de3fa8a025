// Starts Swagger UI on the service's own schema. Served from this origin: the page's security policy
// forbids inline scripts, and the reference must work offline, so no validator badge (an external call).
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    onComplete: () => document.body.setAttribute("data-docs-ready", "1"),
  });
});
