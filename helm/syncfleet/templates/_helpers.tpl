{{/* Names and labels. */}}

{{- define "syncfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name. Kept at 40 characters so that the longest
suffix ("-scheduler-ops", "-keda-rabbitmq") stays within the 63 characters of
a label value and of a Service name.
*/}}
{{- define "syncfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "syncfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource; call with (dict "root" $ "component" "worker"), component optional. */}}
{{- define "syncfleet.labels" -}}
helm.sh/chart: {{ include "syncfleet.chart" .root }}
{{ include "syncfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: syncfleet
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "syncfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncfleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "syncfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{- define "syncfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "syncfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "syncfleet.configMapName" -}}
{{- printf "%s-config" (include "syncfleet.fullname" .) }}
{{- end }}

{{- define "syncfleet.secretName" -}}
{{- include "syncfleet.fullname" . }}
{{- end }}

{{/* Settings. */}}

{{/* A setting's value as the string the services read (integers without exponent). */}}
{{- define "syncfleet.settingValue" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
A component's effective settings as JSON: `config` overlaid with the
component's own `config`. Call with (dict "root" $ "overrides" .Values.worker.config).
*/}}
{{- define "syncfleet.effectiveConfig" -}}
{{- $merged := deepCopy .root.Values.config }}
{{- range $name, $value := (.overrides | default dict) }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $merged $name $value }}
{{- end }}
{{- end }}
{{- toJson $merged }}
{{- end }}

{{/* The port of a `host:port` listen address. */}}
{{- define "syncfleet.listenPort" -}}
{{- splitList ":" (toString .) | last | int }}
{{- end }}

{{/* Environment variables from a settings map, skipping unset ones. */}}
{{- define "syncfleet.settingsEnv" -}}
{{- range $name, $value := . }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ include "syncfleet.settingValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secrets. */}}

{{/* Every secret group and the variables it holds. */}}
{{- define "syncfleet.secretGroups" -}}
database: [SYNCFLEET_DATABASE_URL]
amqp: [SYNCFLEET_AMQP_URL]
redis: [SYNCFLEET_REDIS_URL]
smtp: [SYNCFLEET_SMTP_URL]
rabbitmqManagement: [SYNCFLEET_RABBITMQ_MANAGEMENT_URL]
encryption: [SYNCFLEET_ENCRYPTION_KEYS]
providers: [SYNCFLEET_MICROSOFT_CLIENT_SECRET, SYNCFLEET_GOOGLE_CLIENT_SECRET, SYNCFLEET_SALESFORCE_CLIENT_SECRET]
{{- end }}

{{/* The key/value pairs of the Secret the chart creates (groups without existingSecret, non-empty values). */}}
{{- define "syncfleet.createdSecretData" -}}
{{- $data := dict }}
{{- range $group, $names := include "syncfleet.secretGroups" . | fromYaml }}
{{- $values := index $.Values.secrets $group }}
{{- if not $values.existingSecret }}
{{- range $name := $names }}
{{- $value := index $values.values $name | default "" }}
{{- if $value }}
{{- $_ := set $data $name $value }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $data }}
{{- end }}

{{/*
The env entries of one secret variable, or nothing when it is unset. Call with
(dict "root" $ "group" "database" "name" "SYNCFLEET_DATABASE_URL" "createdSecret" "name-of-created-secret").
*/}}
{{- define "syncfleet.secretEnvVar" -}}
{{- $values := index .root.Values.secrets .group }}
{{- if $values.existingSecret }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ $values.existingSecret }}
      key: {{ index $values.existingSecretKeys .name }}
{{- else if (index $values.values .name) }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .createdSecret }}
      key: {{ .name }}
{{- end }}
{{- end }}

{{/* The env entries of every secret variable, for the Deployments. */}}
{{- define "syncfleet.secretEnv" -}}
{{- $root := . }}
{{- range $group, $names := include "syncfleet.secretGroups" . | fromYaml }}
{{- range $name := $names }}
{{- include "syncfleet.secretEnvVar" (dict "root" $root "group" $group "name" $name "createdSecret" (include "syncfleet.secretName" $root)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pods. */}}

{{/* Annotations of a component's pod template. Call with (dict "root" $ "values" .Values.worker "port" 9090). */}}
{{- define "syncfleet.podAnnotations" -}}
{{- $root := .root }}
checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
{{- if $root.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with (mergeOverwrite (deepCopy $root.Values.podAnnotations) .values.podAnnotations) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Scheduling constraints of a component's pod. Call with (dict "root" $ "values" .Values.worker "component" "worker"). */}}
{{- define "syncfleet.podScheduling" -}}
{{- $selector := include "syncfleet.selectorLabels" (dict "root" .root "component" .component) | fromYaml }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if eq .values.podAntiAffinity "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- toYaml $selector | nindent 14 }}
{{- else if eq .values.podAntiAffinity "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- toYaml $selector | nindent 12 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
{{- $constraints := list }}
{{- range . }}
{{- $constraints = append $constraints (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" $selector))) }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{/* HTTP probes on a named port. Call with (dict "values" .Values.worker "port" "ops"). */}}
{{- define "syncfleet.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  {{- toYaml .values.livenessProbe | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
  {{- toYaml .values.readinessProbe | nindent 2 }}
{{- end }}

{{/* The pod-level fields every component shares. */}}
{{- define "syncfleet.podCommon" -}}
serviceAccountName: {{ include "syncfleet.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The env of a component's container: its own settings overrides (which win
over the ConfigMap's envFrom), the secret variables, then extraEnv.
Call with (dict "root" $ "values" .Values.worker "extra" (list of env entries)).
*/}}
{{- define "syncfleet.containerEnv" -}}
{{- include "syncfleet.settingsEnv" (.values.config | default dict) }}
{{- with .extra }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- include "syncfleet.secretEnv" .root }}
{{- with .values.extraEnv }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{/* A budget field as a string; empty when unset (null or ""). */}}
{{- define "syncfleet.budgetValue" -}}
{{- if not (kindIs "invalid" .) }}
{{- include "syncfleet.settingValue" . }}
{{- end }}
{{- end }}

{{/* Checks that hold across values the schema cannot relate. */}}
{{- define "syncfleet.validate" -}}
{{- $autoscaling := .Values.worker.autoscaling }}
{{- if and $autoscaling.keda.enabled $autoscaling.hpa.enabled }}
{{- fail "worker.autoscaling: enable KEDA or the HPA, not both (KEDA creates its own HPA)" }}
{{- end }}
{{- if gt (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas) }}
{{- fail (printf "worker.autoscaling.minReplicas (%d) is greater than maxReplicas (%d)" (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas)) }}
{{- end }}
{{- if and $autoscaling.keda.enabled (not (or $autoscaling.keda.rabbitmq.managementUrl $autoscaling.keda.rabbitmq.existingSecret)) }}
{{- fail "worker.autoscaling.keda: set rabbitmq.managementUrl or rabbitmq.existingSecret (the RabbitMQ management API URL KEDA reads the queue depths from)" }}
{{- end }}
{{- if and $autoscaling.hpa.enabled (not (dig "requests" "cpu" "" (.Values.worker.resources | default dict))) }}
{{- fail "worker.autoscaling.hpa: set worker.resources.requests.cpu (CPU utilization is a percentage of it)" }}
{{- end }}
{{- if and $autoscaling.hpa.enabled $autoscaling.hpa.targetMemoryUtilizationPercentage (not (dig "requests" "memory" "" (.Values.worker.resources | default dict))) }}
{{- fail "worker.autoscaling.hpa: set worker.resources.requests.memory (memory utilization is a percentage of it)" }}
{{- end }}
{{- range $component := list "scheduler" "worker" "api" }}
{{- $pdb := (index $.Values $component).podDisruptionBudget }}
{{- if $pdb.enabled }}
{{- $min := include "syncfleet.budgetValue" $pdb.minAvailable }}
{{- $max := include "syncfleet.budgetValue" $pdb.maxUnavailable }}
{{- if eq (empty $min) (empty $max) }}
{{- fail (printf "%s.podDisruptionBudget: set exactly one of minAvailable and maxUnavailable (set the other to \"\")" $component) }}
{{- end }}
{{- $autoscaled := and (eq $component "worker") (or $autoscaling.keda.enabled $autoscaling.hpa.enabled) }}
{{- $replicas := (index $.Values $component).replicas | int }}
{{- if and (not $autoscaled) $min (not (hasSuffix "%" $min)) (gt $replicas 0) (ge (int $min) $replicas) }}
{{- fail (printf "%s.podDisruptionBudget.minAvailable (%s) must be below %s.replicas (%d), or no pod could ever be evicted (node drains would hang)" $component $min $component $replicas) }}
{{- end }}
{{- end }}
{{- end }}
{{- include "syncfleet.validateEncryptionKeys" . }}
{{- end }}

{{/*
SYNCFLEET_ENCRYPTION_KEYS is the one secret without a fallback: the worker
refuses to start without it. Checked last, so that a values file with another
mistake is rejected for that one first. A value given here is checked for its
shape (the services check it again at start); the messages never print it.
*/}}
{{- define "syncfleet.validateEncryptionKeys" -}}
{{- $encryption := .Values.secrets.encryption }}
{{- if not $encryption.existingSecret }}
{{- $keys := index ($encryption.values | default dict) "SYNCFLEET_ENCRYPTION_KEYS" | default "" | trim }}
{{- if not $keys }}
{{- fail "secrets.encryption: set values.SYNCFLEET_ENCRYPTION_KEYS or existingSecret. The worker refuses to start without the keys sealing stored credentials; make one with: echo \"1:$(openssl rand -base64 32)\" (see the chart README, \"Encryption keys\")" }}
{{- end }}
{{- $versions := dict }}
{{- $position := 0 }}
{{- range $pair := splitList "," $keys }}
{{- $pair = trim $pair }}
{{- if $pair }}
{{- $position = add1 $position }}
{{- if not (regexMatch `^0*[1-9][0-9]{0,8}\s*:\s*[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$` $pair) }}
{{- fail (printf "secrets.encryption.values.SYNCFLEET_ENCRYPTION_KEYS: entry %d is not version:key, a positive version and a key of 32 bytes in standard base64 (openssl rand -base64 32); the value is not printed" $position) }}
{{- end }}
{{- $version := splitList ":" $pair | first | trim | int | toString }}
{{- if hasKey $versions $version }}
{{- fail (printf "secrets.encryption.values.SYNCFLEET_ENCRYPTION_KEYS: version %s is listed twice" $version) }}
{{- end }}
{{- $_ := set $versions $version true }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
