// Starts Swagger UI (docs.html) or ReDoc (redoc.html) over this service's OpenAPI document,
// from the bundles the server ships (spe/web/docs.py): no CDN, no inline script, so the
// pages work offline under the same CSP as every other page.
"use strict";

(() => {
  const meta = document.querySelector('meta[name="spe-root"]');
  const root = meta ? meta.content : "";
  const openapi = `${root}/openapi.json`;
  const swagger = document.getElementById("swagger-ui");
  const redoc = document.getElementById("redoc");
  if (swagger && window.SwaggerUIBundle) {
    window.SwaggerUIBundle({
      url: openapi,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      presets: [window.SwaggerUIBundle.presets.apis,
        window.SwaggerUIBundle.SwaggerUIStandalonePreset],
      onComplete: () => { document.body.dataset.ready = "true"; },
    });
  } else if (redoc && window.Redoc) {
    // ReDoc writes its CSS into <style> elements: they carry the nonce the page's CSP names.
    // Its search runs in a worker made from a blob, which the CSP refuses: no search box
    // (Swagger UI's filter, on /docs, is the way to look for a route).
    const nonce = document.querySelector('meta[name="spe-style-nonce"]');
    window.Redoc.init(openapi, {nonce: nonce ? nonce.content : undefined, disableSearch: true},
      redoc,
      () => { document.body.dataset.ready = "true"; });
  }
})();
