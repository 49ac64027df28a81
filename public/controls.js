/* rpi-streamer browser client: the camera Controls panel, built from GET /controls.
 *
 * One widget per control the open camera offers: a slider with its number for int and
 * float controls, a checkbox for bool, a menu for menu controls; read-only ones are shown
 * disabled. A change is POSTed as {"Name": value}; while one request is in flight only the
 * newest further change per control waits, so dragging a slider sends at most one request
 * at a time and ends on the value where it stopped. The panel's button appears only when the
 * camera has controls and the page may read them (no 401/403); a refused change (another
 * origin, a value the camera rejects) is shown in the panel.
 */
"use strict";

window.RpiControls = (function () {
  const RETRY_MS = 10000;

  /* opts: { panel, button, url: () => URL of /controls (with ?token= if any) } */
  function attach(opts) {
    const panel = opts.panel;
    const button = opts.button;
    const list = document.createElement("div");
    const message = document.createElement("p");
    message.className = "note";
    panel.append(list, message);
    const widgets = new Map(); // name -> {control, set(value)}
    let pending = {}; // changes waiting for the request in flight
    let inFlight = false;
    let retryTimer = null;
    const state = { loaded: false, posts: 0, lastError: null, values: {} };

    function say(text) {
      message.textContent = text || "";
      state.lastError = text || null;
    }

    async function load() {
      clearTimeout(retryTimer);
      try {
        const r = await fetch(opts.url().href, { cache: "no-store" });
        if (!r.ok) throw new Error("HTTP " + r.status);
        const controls = await r.json();
        if (!Array.isArray(controls) || controls.length === 0) throw new Error("no controls");
        build(controls);
        button.hidden = false;
        state.loaded = true;
      } catch (e) {
        // No camera yet, no access, or a server without /controls (the seed): try later.
        if (!state.loaded) button.hidden = true;
        retryTimer = setTimeout(load, RETRY_MS);
      }
    }

    function labelFor(c) {
      const label = document.createElement("label");
      label.className = "control";
      const name = document.createElement("span");
      name.className = "control-name";
      name.textContent = c.name;
      label.append(name);
      return label;
    }

    function build(controls) {
      list.textContent = "";
      widgets.clear();
      for (const c of controls) {
        const label = labelFor(c);
        let input;
        let readout = null;
        if (c.type === "bool") {
          input = document.createElement("input");
          input.type = "checkbox";
          input.addEventListener("change", () => change(c.name, input.checked));
        } else if (c.type === "menu") {
          input = document.createElement("select");
          for (const e of c.menu) {
            const o = document.createElement("option");
            o.value = String(e.value);
            o.textContent = e.name;
            input.append(o);
          }
          input.addEventListener("change", () => change(c.name, Number(input.value)));
        } else {
          input = document.createElement("input");
          input.type = "range";
          input.min = String(c.min);
          input.max = String(c.max);
          // A float with no step of its own moves in 200 steps over its range.
          const step = c.step || (c.type === "int" ? 1 : (c.max - c.min) / 200 || 0.01);
          input.step = String(step);
          readout = document.createElement("output");
          input.addEventListener("input", () => {
            readout.textContent = formatValue(c, Number(input.value));
            change(c.name, Number(input.value));
          });
        }
        input.disabled = !!c.read_only;
        input.dataset.control = c.name;
        input.title = c.name + " (default " + c.default + ")";
        label.append(input);
        if (readout) label.append(readout);
        const reset = document.createElement("button");
        reset.type = "button";
        reset.className = "control-reset";
        reset.textContent = "↺";
        reset.title = "Back to " + c.default;
        reset.disabled = !!c.read_only;
        reset.addEventListener("click", () => {
          show(c.name, c.default);
          change(c.name, c.type === "bool" ? !!c.default : c.default);
        });
        label.append(reset);
        list.append(label);
        widgets.set(c.name, { control: c, input, readout });
        show(c.name, c.value);
      }
    }

    function formatValue(c, v) {
      return c.type === "float" ? String(Math.round(v * 1000) / 1000) : String(v);
    }

    function show(name, value) {
      const w = widgets.get(name);
      if (!w) return;
      state.values[name] = value;
      if (w.control.type === "bool") w.input.checked = value === true || value === 1;
      else w.input.value = String(value);
      if (w.readout) w.readout.textContent = formatValue(w.control, Number(value));
    }

    function change(name, value) {
      pending[name] = value;
      if (!inFlight) send();
    }

    async function send() {
      const body = pending;
      pending = {};
      if (Object.keys(body).length === 0) return;
      inFlight = true;
      try {
        const r = await fetch(opts.url().href, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
          cache: "no-store",
        });
        const answer = await r.json().catch(() => null);
        state.posts++;
        if (r.ok && Array.isArray(answer)) {
          say("");
          for (const c of answer) {
            if (!(c.name in pending)) show(c.name, c.value);
          }
        } else {
          say((answer && answer.error) || "the camera refused the change (HTTP " + r.status + ")");
        }
      } catch (e) {
        say("could not reach the camera's controls: " + e.message);
      } finally {
        inFlight = false;
      }
      if (Object.keys(pending).length) send();
    }

    button.addEventListener("click", () => {
      panel.hidden = !panel.hidden;
      button.setAttribute("aria-pressed", String(!panel.hidden));
      if (!panel.hidden) load();
    });
    load();
    return { state, reload: load, set: change };
  }

  return { attach };
})();
