// The only file to edit when deploying the page (for example on Vercel): the scoring API's base URL.
// Leave it empty to call the API on the same origin that serves the page (`python -m pipeline serve`
// serves this page at /ui with its own config.js, pointed at itself).
window.API_URL = "http://127.0.0.1:8000";
