{{/*
Names, labels and the pieces of pod spec every smf workload shares.
*/}}

{{- define "smf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; truncated to leave room for the longest suffix ("-artifact", "-minio-init"). */}}
{{- define "smf.fullname" -}}
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

{{- define "smf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (never add version here). */}}
{{- define "smf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "smf.labels" -}}
helm.sh/chart: {{ include "smf.chart" . }}
{{ include "smf.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: smf
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "component" "gan"). */}}
{{- define "smf.componentLabels" -}}
{{ include "smf.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "smf.componentSelectorLabels" -}}
{{ include "smf.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The services that launch training Jobs and so get the Job-launching ServiceAccount. Fixed by design. */}}
{{- define "smf.jobLaunchers" -}}
{{- list "gan" "rnn" | toJson }}
{{- end }}

{{/* "true" when a ServiceMonitor is wanted and the cluster has the Prometheus Operator's CRD, else empty. */}}
{{- define "smf.serviceMonitor" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}true{{ end }}
{{- end }}

{{- define "smf.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "smf.serviceAccountName" -}}
{{- include "smf.fullname" . }}
{{- end }}

{{- define "smf.jobLauncherServiceAccountName" -}}
{{- printf "%s-job-launcher" (include "smf.fullname" .) }}
{{- end }}

{{- define "smf.trainingServiceAccountName" -}}
{{- printf "%s-training" (include "smf.fullname" .) }}
{{- end }}

{{- define "smf.tokenSecretName" -}}
{{- default (printf "%s-token" (include "smf.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "smf.tokenSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{- define "smf.s3SecretName" -}}
{{- default (printf "%s-s3" (include "smf.fullname" .)) .Values.s3.existingSecret }}
{{- end }}

{{- define "smf.s3AccessKeyKey" -}}
{{- if .Values.s3.existingSecret }}{{ .Values.s3.existingSecretAccessKeyKey }}{{ else }}accessKey{{ end }}
{{- end }}

{{- define "smf.s3SecretKeyKey" -}}
{{- if .Values.s3.existingSecret }}{{ .Values.s3.existingSecretSecretKeyKey }}{{ else }}secretKey{{ end }}
{{- end }}

{{- define "smf.minioName" -}}
{{- printf "%s-minio" (include "smf.fullname" .) }}
{{- end }}

{{- define "smf.minioSecretName" -}}
{{- default (include "smf.minioName" .) .Values.minio.existingSecret }}
{{- end }}

{{- define "smf.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s.%s.svc:9000" (include "smf.minioName" .) .Release.Namespace }}
{{- else }}
{{- required "s3.endpoint is required when minio.enabled=false" .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{- define "smf.storeUri" -}}
{{- if .Values.s3.prefix }}
{{- printf "s3://%s/%s" .Values.s3.bucket (trimAll "/" .Values.s3.prefix) }}
{{- else }}
{{- printf "s3://%s" .Values.s3.bucket }}
{{- end }}
{{- end }}

{{/*
Keep a generated secret value stable across upgrades: reuse what the live Secret holds (lookup is empty during
`helm template` and on first install), else generate. Call with (dict "root" $ "name" secretName "key" k "length" n).
*/}}
{{- define "smf.stableRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if and $existing (hasKey ($existing.data | default dict) .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}

{{/* Store environment of every smf container (services and training). */}}
{{- define "smf.storeEnv" -}}
- name: SMF_STORE
  value: {{ include "smf.storeUri" . | quote }}
- name: SMF_S3_ENDPOINT
  value: {{ include "smf.s3Endpoint" . | quote }}
{{- if .Values.s3.region }}
- name: SMF_S3_REGION
  value: {{ .Values.s3.region | quote }}
{{- end }}
- name: SMF_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "smf.s3SecretName" . }}
      key: {{ include "smf.s3AccessKeyKey" . }}
- name: SMF_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "smf.s3SecretName" . }}
      key: {{ include "smf.s3SecretKeyKey" . }}
{{- end }}

{{/* Writable scratch space: the root filesystem is read-only. */}}
{{- define "smf.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "smf.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}
