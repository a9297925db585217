{{/* Everything one service chart renders: Deployment, Service, ServiceMonitor. */}}
{{- define "ehr-common.component" -}}
{{ include "ehr-common.deployment" . }}
---
{{ include "ehr-common.service" . }}
{{- if .Values.serviceMonitor.enabled }}
---
{{ include "ehr-common.servicemonitor" . }}
{{- end }}
{{- end -}}
