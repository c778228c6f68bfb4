// Registers a framework with the unmodified npm package `mesos-framework` (a Node.js Mesos v1
// HTTP scheduler library) against corral-master and launches one command task on a
// (simulated) agent. Exits 0 once the library reports TASK_RUNNING for it; 1 on timeout.
//
//   node mesos_framework_launch.js <master host> <master port>
"use strict";

const host = process.argv[2];
const port = parseInt(process.argv[3], 10);
const { Scheduler, Mesos } = require("mesos-framework");
const mesos = Mesos.getMesos();

const timeout = setTimeout(() => {
  console.error("FAIL: no TASK_RUNNING from corral-master within 60 s");
  process.exit(1);
}, 60000);

const scheduler = new Scheduler({
  masterUrl: host,
  port: port,
  frameworkName: "corral-compat-mesos-framework",
  logging: { level: "info" },
  restartStates: ["TASK_FAILED", "TASK_LOST", "TASK_ERROR"],
  tasks: {
    sleeper: {
      priority: 1,
      instances: 1,
      commandInfo: new mesos.CommandInfo(null, null, true, "sleep 1000", null, null),
      resources: { cpus: 0.5, mem: 128, ports: 0, disk: 0 },
    },
  },
});

let frameworkId = null;
scheduler.on("subscribed", (obj) => {
  frameworkId = obj.frameworkId;
  console.log("subscribed: framework " + obj.frameworkId + ", stream " + obj.mesosStreamId);
});
scheduler.on("offers", (offers) => {
  console.log("offers: " + offers.offers.length);
});
scheduler.on("task_launched", (task) => {
  console.log("task_launched: " + task.taskId);
});
scheduler.on("update", (update) => {
  const s = update.status;
  console.log("update: " + s.task_id.value + " " + s.state + (s.message ? " (" + s.message + ")" : ""));
  if (s.state === "TASK_RUNNING") {
    clearTimeout(timeout);
    console.log("OK: framework " + frameworkId + " launched " + s.task_id.value + " on agent " +
                s.agent_id.value);
    // Give the library time to send its ACKNOWLEDGE, then leave.
    setTimeout(() => process.exit(0), 1000);
  } else if (["TASK_ERROR", "TASK_FAILED", "TASK_LOST", "TASK_DROPPED"].includes(s.state)) {
    console.error("FAIL: task reached " + s.state);
    process.exit(1);
  }
});
scheduler.on("error", (err) => {
  console.error("library error: " + (err && err.message ? err.message : JSON.stringify(err)));
});
scheduler.on("ready", () => {
  scheduler.subscribe();
});
