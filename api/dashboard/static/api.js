// The REST client: JSON in and out, the token (the server's cookie, or a bearer token typed in the launch form),
// and readable error messages.

const TOKEN_KEY = "mtl-tune.api-token";
const TOKEN_HINT = "open the address `mtl-tune serve` printed (it carries the token), or set it in the launch form";

export const apiBase = document.body.dataset.api || "/api";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** A FastAPI error body as one line per problem: "body.space.lr_shared: value is not valid". */
export function formatDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const parts = (d.loc || []).filter((part) => part !== "body");
        // Some messages already start with their location ("space: strategy: ..."): do not say it twice.
        return parts.length && !d.msg.startsWith(parts.join(": ")) ? `${parts.join(".")}: ${d.msg}` : d.msg;
      })
      .join("\n");
  }
  return detail == null ? "" : JSON.stringify(detail);
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(apiBase + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    let message = formatDetail(data && data.detail) || `${response.status} ${response.statusText}`;
    if (response.status === 401) message = `${message} — ${TOKEN_HINT}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

export const getJSON = (path) => request("GET", path);
export const postJSON = (path, body) => request("POST", path, body ?? {});

/** "/studies/a%20b" from ("studies", "a b"). */
export function path(...parts) {
  return "/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
}

/** "?state=complete&limit=50" from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") q.set(key, String(value));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
