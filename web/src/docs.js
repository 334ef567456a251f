// The API docs page: Swagger UI (from npm, served by the binary) on /api/v1/openapi.json.
window.SwaggerUIBundle({
  url: '/api/v1/openapi.json',
  dom_id: '#swagger',
  deepLinking: true,
  persistAuthorization: false,
});
