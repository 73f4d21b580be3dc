// First page: adapter information and the in-browser kernel self-test.
const $ = (s) => document.querySelector(s);
const status = (msg, error = false) => {
  const el = $("#status");
  el.textContent = msg;
  el.className = error ? "note error" : "note";
};
const fmt = (x) => (x === undefined ? "–" : Number(x).toExponential(2));

async function showAdapter(sd) {
  const info = JSON.parse(await sd.adapterInfo());
  const rows = [
    ["name", info.name || "(not exposed by this browser)"], ["backend", info.backend], ["type", info.device_type], ["driver", info.driver || "–"],
    ["shader-f16", info.shader_f16 ? "yes" : "no (f16 stored packed in u32)"], ["subgroups", info.subgroups ? "yes" : "no"],
    ["max buffer", `${(info.max_buffer_size / 2 ** 20).toFixed(0)} MiB`],
    ["max storage binding", `${(info.max_storage_buffer_binding_size / 2 ** 20).toFixed(0)} MiB`],
    ["workgroup storage", `${info.max_compute_workgroup_storage_size} B`],
    ["invocations / workgroup", info.max_compute_invocations_per_workgroup],
    ["storage buffers / stage", info.max_storage_buffers_per_shader_stage],
  ];
  $("#adapter tbody").innerHTML = rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("");
}

async function selfTest(sd) {
  $("#run").disabled = true;
  const body = $("#kernels tbody");
  body.innerHTML = "";
  let pass = 0, fail = 0;
  for (const name of sd.kernelNames()) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${name}</td><td>running…</td><td></td><td></td><td></td>`;
    body.appendChild(tr);
    try {
      const checks = JSON.parse(await sd.selfTest(name));
      const ok = checks.every((c) => c.pass);
      const worst = (d) => Math.max(...checks.filter((c) => c.dtype === d).map((c) => c.rel_err));
      tr.children[1].innerHTML = ok ? `<span class="pass">pass</span>` : `<span class="fail">FAIL</span>`;
      tr.children[2].textContent = fmt(worst("f32"));
      tr.children[3].textContent = fmt(worst("f16"));
      tr.children[4].textContent = checks.filter((c) => c.dtype === "f32").map((c) => c.case).join("; ");
      ok ? pass++ : fail++;
      tr.dataset.result = ok ? "pass" : "fail";
    } catch (e) {
      tr.children[1].innerHTML = `<span class="fail">error</span>`;
      tr.children[4].textContent = String(e.message || e);
      tr.dataset.result = "fail";
      fail++;
    }
  }
  $("#summary").textContent = `${pass} passed, ${fail} failed`;
  $("#summary").dataset.done = "1";
  $("#run").disabled = false;
}

async function main(sd) {
  if (!("gpu" in navigator)) {
    status("WebGPU is not available in this browser. Use Chrome or Edge 113+ (or Firefox / Safari with WebGPU enabled) on a machine with a supported GPU.", true);
    return;
  }
  try {
    await showAdapter(sd);
  } catch (e) {
    status(String(e.message || e), true);
    return;
  }
  status("GPU ready. Running the kernel self-test…");
  $("#run").onclick = () => selfTest(sd);
  await selfTest(sd);
  status("Done.");
}

if (window.wasmBindings) {
  main(window.wasmBindings);
} else {
  addEventListener("TrunkApplicationStarted", () => main(window.wasmBindings));
}
