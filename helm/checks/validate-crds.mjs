// Validates the custom resources the chart renders (KEDA's ScaledObject and
// TriggerAuthentication, the Prometheus Operator's ServiceMonitor and
// PrometheusRule) against the kubernetes-models schemas, generated from each
// project's Go types.
//
// Usage: node validate-crds.mjs OBJECTS.json
// OBJECTS.json holds [{"source": "...", "object": {...}}, ...]. Prints one
// line per object and exits 1 if any is invalid or of an unknown kind.
//
// scripts/chart-check.sh copies this file next to the node_modules it
// installs outside the repository, so the imports below resolve there.

import { readFileSync } from "node:fs";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
};

// The models accept any key in a trigger's metadata (a string map in KEDA's
// API), so a misspelt parameter would pass unseen: these are the RabbitMQ
// scaler's parameters (KEDA 2.x documentation, "RabbitMQ Queue").
const rabbitmqParameters = new Set([
  "host", "hostFromEnv", "usernameFromEnv", "passwordFromEnv", "protocol", "mode", "value",
  "activationValue", "queueName", "vhostName", "useRegex", "pageSize", "operation", "timeout",
  "excludeUnacknowledged", "unsafeSsl",
]);

function extraChecks(object) {
  const problems = [];
  if (object.kind === "ScaledObject") {
    for (const trigger of object.spec?.triggers ?? []) {
      if (trigger.type !== "rabbitmq") continue;
      for (const key of Object.keys(trigger.metadata ?? {})) {
        if (!rabbitmqParameters.has(key)) problems.push(`trigger ${trigger.name}: unknown rabbitmq parameter ${key}`);
      }
      if (trigger.metadata?.protocol !== "http") {
        problems.push(`trigger ${trigger.name}: protocol must be http (only the management API counts unacked messages)`);
      }
      if (!/^[0-9]+$/.test(trigger.metadata?.value ?? "")) {
        problems.push(`trigger ${trigger.name}: value must be a whole number`);
      }
    }
  }
  return problems;
}

const entries = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failures = 0;
for (const { source, object } of entries) {
  const key = `${object.apiVersion}/${object.kind}`;
  const label = `${source}: ${object.kind}/${object.metadata?.name}`;
  const Model = models[key];
  if (!Model) {
    console.log(`FAIL ${label}: no model for ${key}`);
    failures += 1;
    continue;
  }
  const problems = [];
  try {
    new Model(object).validate();
  } catch (error) {
    problems.push(error.message);
  }
  problems.push(...extraChecks(object));
  if (problems.length > 0) {
    console.log(`FAIL ${label}: ${problems.join("; ")}`);
    failures += 1;
  } else {
    console.log(`ok   ${label}`);
  }
}
process.exit(failures > 0 ? 1 : 0);
