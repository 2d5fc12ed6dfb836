// Shared by the pages: calls to this api (problem+json errors become ApiError), the
// session's tokens (sessionStorage, so each tab signs in on its own), money and time
// formatting, and a tiny element builder. No framework, nothing loaded from elsewhere.
"use strict";

const SeatLedger = (() => {
  const SESSION_KEY = "seat-ledger-session";

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
      this.kind = (this.problem.type || "").replace("/problems/", "");
    }
  }

  function loadSession() {
    try {
      return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    } catch (_) {
      return null;
    }
  }

  let session = loadSession();
  const listeners = [];

  function setSession(next) {
    session = next;
    if (next) sessionStorage.setItem(SESSION_KEY, JSON.stringify(next));
    else sessionStorage.removeItem(SESSION_KEY);
    listeners.forEach((listener) => listener(session));
  }

  async function send(method, path, body, options) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (session && !options.anonymous) headers.Authorization = `Bearer ${session.access_token}`;
    Object.assign(headers, options.headers || {});
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = { detail: text };
      }
    }
    return { response, data };
  }

  // One refresh at a time: concurrent 401s wait for the same rotation.
  let refreshing = null;

  async function refresh() {
    if (!session || !session.refresh_token) return false;
    if (!refreshing) {
      refreshing = (async () => {
        const { response, data } = await send(
          "POST", "/api/v1/auth/refresh-token",
          { refresh_token: session.refresh_token }, { anonymous: true });
        if (!response.ok) {
          setSession(null);
          return false;
        }
        setSession(Object.assign({}, session, {
          access_token: data.access_token,
          refresh_token: data.refresh_token,
        }));
        return true;
      })().finally(() => { refreshing = null; });
    }
    return refreshing;
  }

  /// Calls the api; resolves to `{ data, headers, status }` or throws ApiError.
  async function api(method, path, body, options = {}) {
    let { response, data } = await send(method, path, body, options);
    if (response.status === 401 && session && !options.anonymous && await refresh()) {
      ({ response, data } = await send(method, path, body, options));
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return { data, headers: response.headers, status: response.status };
  }

  function idempotencyKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function money(minor, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "INR" })
        .format(minor / 100);
    } catch (_) {
      return `${(minor / 100).toFixed(2)} ${currency || ""}`.trim();
    }
  }

  function when(rfc3339) {
    const date = new Date(rfc3339);
    return date.toLocaleString(undefined, {
      weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
    });
  }

  /// `el("li", { class: "x", "aria-label": "..." }, child, "text", ...)`
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  /// Writes `text` into a message element with a tone: info, ok or error.
  function say(node, text, tone) {
    node.className = `message ${tone || "info"}`;
    node.textContent = text || "";
  }

  /// Wires a sign-in / sign-up form pair and the signed-in bar of a page.
  function wireAccount(ids, onChange) {
    const $ = (id) => document.getElementById(id);
    const render = () => {
      const signedIn = Boolean(session);
      show($(ids.forms), !signedIn);
      show($(ids.bar), signedIn);
      if (signedIn) $(ids.who).textContent = `${session.user.email} (${session.user.role})`;
      onChange(session);
    };
    listeners.push(render);
    $(ids.loginForm).addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      try {
        const { data } = await api("POST", "/api/v1/login", {
          email: form.email.value, password: form.password.value,
        }, { anonymous: true });
        form.reset();
        say($(ids.message), "");
        setSession(data);
      } catch (error) {
        say($(ids.message), `Could not log in: ${error.message}`, "error");
      }
    });
    if (ids.signupForm) {
      $(ids.signupForm).addEventListener("submit", async (event) => {
        event.preventDefault();
        const form = event.target;
        try {
          const { data } = await api("POST", "/api/v1/signup", {
            name: form.name.value, email: form.email.value,
            phone: form.phone.value, password: form.password.value,
          }, { anonymous: true, headers: { "Idempotency-Key": idempotencyKey() } });
          form.reset();
          say($(ids.message), "");
          setSession(data);
        } catch (error) {
          say($(ids.message), `Could not sign up: ${error.message}`, "error");
        }
      });
    }
    $(ids.logout).addEventListener("click", () => setSession(null));
    render();
  }

  return {
    ApiError, api, idempotencyKey, money, when, el, show, say, wireAccount,
    session: () => session,
  };
})();
