{{/*
The ClusterIP Service in front of one service's pods: `http` (the API, what the
gateway's routes name) and `metrics` (/metrics, what the ServiceMonitor scrapes).
*/}}
{{- define "ehr-common.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "ehr-common.fullname" . }}
  labels:
    {{- include "ehr-common.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "ehr-common.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .Values.port }}
      targetPort: http
      protocol: TCP
    - name: metrics
      port: {{ .Values.metricsPort }}
      targetPort: metrics
      protocol: TCP
{{- end -}}
