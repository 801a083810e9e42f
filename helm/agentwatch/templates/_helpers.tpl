{{/*
The chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "agentwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified name: "<release>-<chart>", or the release name when it already
contains the chart name. 52 characters at most, so derived names ("-headless",
"-create-topics") and StatefulSet pod names (with their controller-revision-hash
label) stay within Kubernetes' limits.
*/}}
{{- define "agentwatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "agentwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "agentwatch.labels" -}}
helm.sh/chart: {{ include "agentwatch.chart" . }}
{{ include "agentwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentwatch
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the agentwatch pods (immutable in a Deployment / StatefulSet).
The topic-creation Job's pods deliberately do not carry them.
*/}}
{{- define "agentwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "agentwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding the BlueKing app secret: the existing one, or the one the chart creates.
*/}}
{{- define "agentwatch.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "agentwatch.fullname" . }}
{{- end }}
{{- end }}

{{/*
The container image reference.
*/}}
{{- define "agentwatch.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- if .Values.image.digest }}
{{- $ref = printf "%s@%s" $ref .Values.image.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/*
Where the config and the app secret are mounted. The secret file's path is handed to
agentwatch as bk.app_secret_file (through the environment).
*/}}
{{- define "agentwatch.configPath" -}}
/etc/agentwatch/agentwatch.toml
{{- end }}

{{- define "agentwatch.secretDir" -}}
/var/run/secrets/agentwatch
{{- end }}

{{/*
Checks that values cannot express in values.schema.json, because they concern the
TOML text or relate two values. Renders nothing; fails the install with a message.
*/}}
{{- define "agentwatch.validate" -}}
{{- $config := .Values.config }}
{{- if not (or .Values.secret.appSecret .Values.secret.existingSecret) }}
{{- fail "set secret.appSecret (the BlueKing app secret) or secret.existingSecret (a Secret holding it under secret.key)" }}
{{- end }}
{{- if regexMatch "(?m)^\\s*(bk\\s*\\.\\s*)?\"?app_secret\"?\\s*=" $config }}
{{- fail "config must not contain bk.app_secret: a ConfigMap is not for credentials; use secret.appSecret or secret.existingSecret" }}
{{- end }}
{{- if regexMatch "(?m)^\\s*\"?(sasl\\.password|ssl\\.key\\.password|ssl\\.keystore\\.password)\"?\\s*=" $config }}
{{- fail "config must not contain Kafka passwords (kafka.options sasl.password / ssl.*.password): pass them with extraEnv from a secretKeyRef, e.g. AGENTWATCH__KAFKA__OPTIONS__SASL.PASSWORD" }}
{{- end }}
{{- if regexMatch "(?m)^\\s*(\\[\\s*shard\\s*\\]|shard\\s*[.=])" $config }}
{{- fail "config must not contain [shard]: the chart sets shard.* from sharding.enabled / sharding.shards" }}
{{- end }}
{{- /* shutdown.grace: the simple forms "20s", "500ms", "2m", "1h". */}}
{{- $grace := regexFind "(?m)^\\s*grace\\s*=\\s*\"[0-9]+(ms|s|m|h)\"" $config }}
{{- if $grace }}
{{- $num := regexFind "[0-9]+" $grace | int }}
{{- $unit := regexFind "(ms|s|m|h)\"$" $grace | trimSuffix "\"" }}
{{- $secs := $num }}
{{- if eq $unit "ms" }}{{ $secs = div (add $num 999) 1000 }}{{ end }}
{{- if eq $unit "m" }}{{ $secs = mul $num 60 }}{{ end }}
{{- if eq $unit "h" }}{{ $secs = mul $num 3600 }}{{ end }}
{{- if le (int .Values.terminationGracePeriodSeconds) $secs }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdown.grace (%s): Kubernetes would kill agentwatch while it flushes" (int .Values.terminationGracePeriodSeconds) (regexFind "\"[^\"]+\"" $grace)) }}
{{- end }}
{{- else if le (int .Values.terminationGracePeriodSeconds) 20 }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdown.grace (default 20s)" (int .Values.terminationGracePeriodSeconds)) }}
{{- end }}
{{- end }}

{{/*
Environment of the agentwatch container: what the chart owns in the config.
*/}}
{{- define "agentwatch.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: AGENTWATCH__HTTP__LISTEN
  value: "0.0.0.0:9108"
- name: AGENTWATCH__BK__APP_SECRET_FILE
  value: {{ printf "%s/app_secret" (include "agentwatch.secretDir" .) | quote }}
{{- if .Values.sharding.enabled }}
- name: AGENTWATCH__SHARD__FROM_POD_NAME
  value: "true"
- name: AGENTWATCH__SHARD__TOTAL
  value: {{ .Values.sharding.shards | int | quote }}
{{- else }}
- name: AGENTWATCH__SHARD__FROM_POD_NAME
  value: "false"
- name: AGENTWATCH__SHARD__INDEX
  value: "0"
- name: AGENTWATCH__SHARD__TOTAL
  value: "1"
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volumes shared by the service pods and the topic-creation Job.
Argument: (dict "root" $ "configMap" NAME "secret" NAME).
*/}}
{{- define "agentwatch.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: app-secret
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    items:
      - key: {{ .root.Values.secret.key }}
        path: app_secret
# agentwatch writes no files; a small writable /tmp keeps libraries that fall back to
# it working under readOnlyRootFilesystem.
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- with .root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "agentwatch.volumeMounts" -}}
- name: config
  mountPath: /etc/agentwatch
  readOnly: true
- name: app-secret
  mountPath: {{ include "agentwatch.secretDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The pod template of the Deployment and of the StatefulSet.
*/}}
{{- define "agentwatch.podTemplate" -}}
metadata:
  labels:
    {{- include "agentwatch.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- if not .Values.secret.existingSecret }}
    checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "agentwatch.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: agentwatch
      image: {{ include "agentwatch.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - run
        - --config
        - {{ include "agentwatch.configPath" . }}
        {{- with .Values.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        {{- include "agentwatch.env" . | nindent 8 }}
      ports:
        - name: http
          containerPort: 9108
          protocol: TCP
      {{- if .Values.startupProbe.enabled }}
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml (omit .Values.startupProbe "enabled") | nindent 8 }}
      {{- end }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      {{- with .Values.containerSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- include "agentwatch.volumeMounts" . | nindent 8 }}
  volumes:
    {{- include "agentwatch.volumes" (dict "root" . "configMap" (include "agentwatch.fullname" .) "secret" (include "agentwatch.secretName" .)) | nindent 4 }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
PromQL label matchers (without braces) that pick this release's targets in the alert
rules: prometheus.rules.selector, or the `job` label the chart's ServiceMonitor gives
them plus the release namespace. The Prometheus Operator takes `job` from the Service
label named by jobLabel, or the Service's name when it has no such label.
*/}}
{{- define "agentwatch.rulesSelector" -}}
{{- if .Values.prometheus.rules.selector }}
{{- .Values.prometheus.rules.selector }}
{{- else }}
{{- $svcLabels := merge (dict "app.kubernetes.io/component" "metrics") (.Values.service.labels | default dict) (fromYaml (include "agentwatch.labels" .)) }}
{{- $job := get $svcLabels (default "app.kubernetes.io/name" .Values.prometheus.monitor.jobLabel) | toString }}
{{- printf "job=%q,namespace=%q" (default (include "agentwatch.fullname" .) $job) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
Seconds between sweeps for the sweep alerts: prometheus.rules.sweepIntervalSeconds, or
`interval = "<n>ms|s|m|h"` in the [poll] section of config, or agentwatch's default 10.
*/}}
{{- define "agentwatch.sweepIntervalSeconds" -}}
{{- $secs := int .Values.prometheus.rules.sweepIntervalSeconds }}
{{- if not $secs }}
{{- $poll := regexFind "\\[poll\\][^\\[]*" .Values.config }}
{{- $line := regexFind "(?m)^\\s*interval\\s*=\\s*\"[0-9]+(ms|s|m|h)\"" $poll }}
{{- if $line }}
{{- $num := regexFind "[0-9]+" $line | int }}
{{- $unit := regexFind "(ms|s|m|h)\"$" $line | trimSuffix "\"" }}
{{- $secs = $num }}
{{- if eq $unit "ms" }}{{ $secs = div (add $num 999) 1000 }}{{ end }}
{{- if eq $unit "m" }}{{ $secs = mul $num 60 }}{{ end }}
{{- if eq $unit "h" }}{{ $secs = mul $num 3600 }}{{ end }}
{{- else }}
{{- $secs = 10 }}
{{- end }}
{{- end }}
{{- $secs }}
{{- end }}

{{/*
`for`, labels and the runbook link of one chart alert, with prometheus.rules.overrides
applied. Ends inside `annotations:`, so the caller adds summary and description below.
Argument: (dict "root" $ "alert" NAME "runbook" ANCHOR "for" DURATION "severity" SEVERITY);
ANCHOR is the heading anchor of the alert's section in docs/troubleshooting.md
(scripts/check_chart.py checks that it exists).
*/}}
{{- define "agentwatch.alertMeta" -}}
{{- $rules := .root.Values.prometheus.rules }}
{{- $o := index $rules.overrides .alert | default dict -}}
for: {{ $o.for | default .for }}
labels:
  severity: {{ $o.severity | default .severity }}
  {{- with $rules.alertLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  runbook_url: {{ printf "%s#%s" $rules.runbookBaseUrl .runbook | quote }}
{{- end }}

{{/*
A ratio value as a percentage for alert descriptions: 0.05 -> "5%".
*/}}
{{- define "agentwatch.percent" -}}
{{- round (mulf . 100) 2 }}%
{{- end }}
