{{/* Names, labels and the blocks every eventgw container shares. */}}

{{- define "eventgw.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "eventgw.selector" -}}
app.kubernetes.io/name: eventgw
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "eventgw.labels" -}}
{{ include "eventgw.selector" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "eventgw.image" -}}
{{- $image := merge (dict) (.override | default dict) .root.Values.image -}}
image: {{ printf "%s:%s" $image.repository $image.tag | quote }}
imagePullPolicy: {{ $image.pullPolicy | default "IfNotPresent" }}
{{- end -}}

{{/* The Kafka principal eventgw-<role> on every configured cluster, the backup key. */}}
{{- define "eventgw.env" -}}
- {name: EVENTGW_OBSERVABILITY__LOG_FORMAT, value: json}
{{- range $cluster := list "primary" "rollout" "fallback" }}
{{- if index $.root.Values.kafka $cluster }}
- {name: EVENTGW_KAFKA__{{ upper $cluster }}__SASL_USERNAME, value: eventgw-{{ $.role }}}
- name: EVENTGW_KAFKA__{{ upper $cluster }}__SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: eventgw-kafka-{{ $.role }}, key: password}}
{{- end }}
{{- end }}
- name: EVENTGW_BACKUP__HMAC_KEY
  valueFrom: {secretKeyRef: {name: eventgw-backup, key: hmac-key}}
{{- /* The internal gRPC token each role checks or presents, no other (docs/security.md). */}}
{{- $token := dict "ingest" "publisher" "publisher" "publisher" "orchestrator" "orchestrator" "processor" "orchestrator" }}
{{- with get $token .role }}
- name: EVENTGW_INTERNAL_AUTH__{{ upper . }}_TOKEN
  valueFrom: {secretKeyRef: {name: eventgw-internal-auth, key: {{ . }}-token}}
{{- end }}
{{- end -}}

{{/* Unprivileged on a read-only root (docs/security.md, "Pods"). */}}
{{- define "eventgw.securityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* Static settings change → pods restart; the dynamic config is read live, not hashed. */}}
{{- define "eventgw.podAnnotations" -}}
checksum/settings: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | quote }}
{{- end -}}

{{- define "eventgw.settingsVolumes" -}}
- name: settings
  configMap: {name: {{ .Release.Name }}-settings}
- name: dynamic
  configMap: {name: {{ .Release.Name }}-dynamic}
{{- end -}}

{{/* settings.toml by subPath (static); the dynamic config as a directory, so the kubelet
     swaps the file in place when the ConfigMap changes and the watchers see it. */}}
{{- define "eventgw.settingsMounts" -}}
- {name: settings, mountPath: /etc/eventgw/settings.toml, subPath: settings.toml}
- {name: dynamic, mountPath: /etc/eventgw/dynamic}
{{- end -}}

{{- define "eventgw.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "eventgw.name" . }}
  labels:
    {{- include "eventgw.labels" . | nindent 4 }}
spec:
  {{- if hasKey .pdb "minAvailable" }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "eventgw.selector" . | nindent 6 }}
{{- end -}}

{{- define "eventgw.hpa" -}}
{{- if .autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "eventgw.name" . }}
  labels:
    {{- include "eventgw.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "eventgw.name" . }}
  minReplicas: {{ .autoscaling.minReplicas }}
  maxReplicas: {{ .autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target: {type: Utilization, averageUtilization: {{ .autoscaling.targetCPUUtilizationPercentage }}}
{{- end }}
{{- end -}}
