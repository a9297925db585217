{{/*
The Deployment of one service: the shared image, the service's command, EHR_*
settings from values (plain `env`, and `extraEnv` for Secret/ConfigMap references,
rendered first so `env` can use $(VAR)), probes on /healthz and /readyz on the `http`
port, /metrics on the separate `metrics` port (EHR_METRICS_PORT; the gateway routes
only to `http`), a non-root restricted security context and a writable data directory.
*/}}
{{- define "ehr-common.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "ehr-common.fullname" . }}
  labels:
    {{- include "ehr-common.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      {{- include "ehr-common.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ehr-common.labels" . | nindent 8 }}
      {{- with .Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      {{- with .Values.initContainers }}
      initContainers:
        {{- include "ehr-common.tplvalue" (dict "value" . "context" $) | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ include "ehr-common.name" . }}
          image: {{ printf "%s:%s" .Values.image.repository (.Values.image.tag | toString) | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command:
            {{- toYaml .Values.command | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ .Values.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ .Values.metricsPort }}
              protocol: TCP
          env:
            - name: EHR_HOST
              value: "0.0.0.0"
            - name: EHR_PORT
              value: {{ .Values.port | quote }}
            - name: EHR_METRICS_PORT
              value: {{ .Values.metricsPort | quote }}
            {{- with .Values.extraEnv }}
            {{- include "ehr-common.tplvalue" (dict "value" . "context" $) | nindent 12 }}
            {{- end }}
            {{- range $name, $value := .Values.env }}
            - name: {{ $name }}
              value: {{ include "ehr-common.tplvalue" (dict "value" (toString $value) "context" $) | quote }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: {{ .Values.probes.startup.periodSeconds }}
            failureThreshold: {{ .Values.probes.startup.failureThreshold }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
            timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
            failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
            timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
            failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: data
              mountPath: {{ .Values.dataDir }}
            - name: tmp
              mountPath: /tmp
            {{- with .Values.extraVolumeMounts }}
            {{- include "ehr-common.tplvalue" (dict "value" . "context" $) | nindent 12 }}
            {{- end }}
      volumes:
        - name: data
          emptyDir: {}
        - name: tmp
          emptyDir: {}
        {{- with .Values.extraVolumes }}
        {{- include "ehr-common.tplvalue" (dict "value" . "context" $) | nindent 8 }}
        {{- end }}
{{- end -}}
