{{- define "iotsec.name" -}}iotsec{{- end -}}

{{- define "iotsec.labels" -}}
app.kubernetes.io/name: iotsec
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: iotsec
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "iotsec.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "iotsec.auditNamespace" -}}{{ .Values.audit.namespace | default (printf "%s-audit" .Release.Name) }}{{- end -}}

{{- define "iotsec.webhookService" -}}{{ .Release.Name }}-webhook{{- end -}}
{{- define "iotsec.webhookSecret" -}}
{{- if eq .Values.certificates.provider "cert-manager" -}}{{ .Values.certificates.certManagerSecret }}{{- else -}}{{ .Release.Name }}-webhook-tls{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, and then some. */}}
{{- define "iotsec.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "iotsec.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- /* The operator fence's failure policy: closed for the operator alone where matchConditions exist (1.28+), open
elsewhere (there a webhook cannot be narrowed to one user). The same as iotsec.desired.webhook._fence_failure. */ -}}
{{- define "iotsec.fenceFailure" -}}
{{- if semverCompare ">=1.28-0" .Capabilities.KubeVersion.Version -}}
failurePolicy: Fail
matchConditions:
  - name: operator-only
    expression: request.userInfo.username == '{{ printf "system:serviceaccount:%s:%s-operator" .Release.Namespace .Release.Name }}'
{{- else -}}
failurePolicy: Ignore
{{- end -}}
{{- end -}}
