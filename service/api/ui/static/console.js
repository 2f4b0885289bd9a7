// The console's only script: sign in, keep running rollouts live, fill server health, and make actions through the
// JSON API with the token as a Bearer header. The token lives in sessionStorage (this tab, until sign-out or close);
// it never goes into a URL. Everything shown is set with textContent, never as HTML.
"use strict";

(function () {
  const KEY = "tenants-console-token";
  const token = () => sessionStorage.getItem(KEY);
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function toLogin() {
    window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
    if (response.status === 401 && document.body.dataset.role !== "open") {
      sessionStorage.removeItem(KEY);
      toLogin();
      throw new Error("sign in again");
    }
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) {
      const error = data && data.error ? data.error : { code: String(response.status), message: response.statusText };
      throw new Error(error.message + " (" + error.code + ")");
    }
    return { response: response, data: data };
  }

  function notice(message, bad) {
    const box = $("[data-notice]");
    if (!box) return;
    box.textContent = message;
    box.classList.toggle("bad", Boolean(bad));
    box.hidden = false;
  }

  // An admin whose tab lost the token (a new tab opened by hand) signs in again before acting.
  function needToken() {
    if (document.body.dataset.role === "open" || token()) return false;
    toLogin();
    return true;
  }

  async function act(button, work) {
    if (needToken()) return;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      await work();
    } catch (error) {
      notice(error.message, true);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  // -- sign in and out ---------------------------------------------------------------------------------------
  const login = $("[data-login]");
  if (login) {
    login.addEventListener("submit", async (event) => {
      event.preventDefault();
      const given = login.elements.token.value.trim();
      const error = $("[data-login-error]");
      const response = await fetch("/ui/session", {
        method: "POST",
        headers: { Authorization: "Bearer " + given },
        credentials: "same-origin",
      });
      if (response.status !== 204) {
        error.textContent = "That token is not accepted.";
        error.hidden = false;
        login.elements.token.focus();
        return;
      }
      sessionStorage.setItem(KEY, given);
      window.location.assign(login.dataset.next || "/ui");
    });
  }
  const logout = $("[data-logout]");
  if (logout) {
    logout.addEventListener("click", async () => {
      sessionStorage.removeItem(KEY);
      await fetch("/ui/session", { method: "DELETE", credentials: "same-origin" });
      window.location.assign("/ui/login");
    });
  }

  // -- live rollouts -----------------------------------------------------------------------------------------
  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function ms(value) {
    if (value === null || value === undefined) return "";
    return value < 10000 ? Math.round(value) + " ms" : (value / 1000).toFixed(1) + " s";
  }

  function itemRow(item) {
    const row = document.createElement("tr");
    row.dataset.item = item.id;
    const th = document.createElement("th");
    th.scope = "row";
    const a = document.createElement("a");
    a.href = "/ui/tenants/" + encodeURIComponent(item.id);
    a.textContent = item.id;
    th.appendChild(a);
    row.appendChild(th);
    cell(row, item.canary ? "yes" : "");
    cell(row, item.from_version === null ? "—" : String(item.from_version), "num");
    const state = cell(row, "");
    const tag = document.createElement("span");
    tag.className = "st st-" + item.state;
    tag.textContent = item.state;
    state.appendChild(tag);
    cell(row, String(item.attempts), "num");
    cell(row, ms(item.duration_ms), "num");
    cell(row, item.error ? item.error.code + ": " + item.error.message : "");
    return row;
  }

  function showRollout(box, r) {
    const set = (name, value) => $$('[data-field="' + name + '"]').forEach((el) => (el.textContent = value));
    ["done", "failed", "skipped", "running", "pending", "total"].forEach((k) => set(k, String(r[k])));
    set("state", r.state);
    $$('[data-field="state"]').forEach((el) => (el.className = "st st-" + r.state));
    if (r.finished_at) set("finished_at", r.finished_at.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, " UTC"));
    const bar = $('[data-field="bar"]', box);
    bar.max = Math.max(r.total, 1);
    bar.value = r.done + r.failed + r.skipped;
    box.dataset.state = r.state;
    const items = $("[data-rollout-items]");
    if (items && r.tenants) {
      // As the page orders them: running, then failed, then run order; no more rows than the page shows.
      const first = { running: 0, failed: 1 };
      const rank = (t) => (t.state in first ? first[t.state] : 2);
      const shown = r.tenants
        .map((t, position) => ({ t: t, position: position }))
        .sort((a, b) => rank(a.t) - rank(b.t) || a.position - b.position)
        .slice(0, Number(items.dataset.limit))
        .map((x) => x.t);
      items.replaceChildren(...shown.map(itemRow));
    }
    if (r.state !== "running") $$("[data-cancel-rollout]").forEach((b) => b.remove());
  }

  $$("[data-live-rollout]").forEach((box) => {
    const id = box.dataset.liveRollout;
    async function poll() {
      try {
        const { data } = await api("GET", "/rollouts/" + id);
        showRollout(box, data);
        // A big rollout's answer lists every tenant: poll it less often.
        if (data.state === "running") setTimeout(poll, data.total > 1000 ? 3000 : 1000);
        else notice("Rollout #" + id + " " + data.state + ".");
      } catch (error) {
        notice(error.message, true);
        setTimeout(poll, 5000);
      }
    }
    if (box.dataset.state === "running") setTimeout(poll, 500);
  });

  // -- server health (a live check each: not in the page, which reads the catalog only) ------------------------
  const health = $("[data-server-health]");
  if (health) {
    api("GET", "/servers")
      .then(({ data }) => {
        data.items.forEach((s) => {
          const row = $('tr[data-server="' + CSS.escape(s.name) + '"] [data-health]', health);
          if (!row) return;
          row.textContent = s.healthy ? "healthy" + (s.version ? " (PostgreSQL " + s.version + ")" : "") : "down: " + (s.error || "");
          row.className = s.healthy ? "ok" : "bad";
        });
      })
      .catch((error) => $$("[data-health]", health).forEach((el) => (el.textContent = error.message)));
  }

  // -- tenant actions ----------------------------------------------------------------------------------------
  $$("[data-action]").forEach((button) => {
    const id = encodeURIComponent(button.dataset.tenant);
    button.addEventListener("click", () =>
      act(button, async () => {
        const kind = button.dataset.action;
        if (kind === "migrate") {
          const { data } = await api("POST", "/tenants/" + id + "/migrate");
          notice("Migrated: now at version " + data.current_version + ", " + data.status + ". Reloading…");
          setTimeout(() => window.location.reload(), 800);
        } else if (kind === "drift") {
          const { data } = await api("GET", "/tenants/" + id + "/drift");
          notice(data.clean ? "No drift." : data.differences.length + " difference(s). Reloading…");
          setTimeout(() => window.location.reload(), 800);
        } else if (kind === "undelete") {
          await api("POST", "/tenants/" + id + "/undelete");
          window.location.reload();
        } else if (kind === "rotate") {
          if (!window.confirm("Give the tenant a new password? The old one stops working at once.")) return;
          const { data } = await api("POST", "/tenants/" + id + "/credentials/rotate");
          const box = $("[data-secret]");
          const field = $("[data-secret-value]");
          field.value = data.connection_url;
          box.hidden = false;
          field.focus();
          field.select();
        }
      })
    );
  });

  const remove = $("[data-delete]");
  if (remove) {
    remove.addEventListener("submit", (event) => {
      event.preventDefault();
      const id = remove.dataset.delete;
      const button = $("button", remove);
      act(button, async () => {
        if (remove.elements.confirm.value !== id) throw new Error("Type the tenant id to confirm.");
        // A deleted tenant is kept (undelete brings it back) until purged: purging it is the only delete left.
        const purge = remove.dataset.deleted === "yes" || (remove.elements.purge && remove.elements.purge.checked);
        const query = "?confirm=" + encodeURIComponent(id) + (purge ? "&purge=true" : "");
        await api("DELETE", "/tenants/" + encodeURIComponent(id) + query);
        if (purge) window.location.assign("/ui/tenants");
        else window.location.reload();
      });
    });
  }

  // -- rollout actions ---------------------------------------------------------------------------------------
  const start = $("[data-start-rollout]");
  if (start) {
    start.addEventListener("submit", (event) => {
      event.preventDefault();
      const f = start.elements;
      act($("button", start), async () => {
        const { data } = await api("POST", "/rollouts", {
          to_version: Number(f.to_version.value),
          concurrency: Number(f.concurrency.value),
          canary: Number(f.canary.value),
          max_failures: Number(f.max_failures.value),
        });
        window.location.assign("/ui/rollouts/" + data.id);
      });
    });
  }
  $$("[data-cancel-rollout]").forEach((button) =>
    button.addEventListener("click", () =>
      act(button, async () => {
        if (!window.confirm("Start no more tenants in this rollout?")) return;
        const { data } = await api("POST", "/rollouts/" + button.dataset.cancelRollout + "/cancel");
        notice("Rollout " + data.state + (data.state === "running" ? ": its running tenants finish first." : "."));
      })
    )
  );
})();
