{{/* Labels of an infrastructure component (kafka, geth, postgres, gateway, ...). */}}
{{- define "ehr-ledger.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component | default .name }}
app.kubernetes.io/part-of: ehr-ledger
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}
{{- define "ehr-ledger.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}
{{/* The JSON list of Geth RPC URLs, one per sealer (failover in order). */}}
{{- define "ehr-ledger.rpcUrls" -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.global.gethSealers) -}}
{{- $urls = append $urls (printf "http://%s-geth-%d.%s-geth-headless:%d" $.Release.Name $i $.Release.Name (int $.Values.global.gethHttpPort)) -}}
{{- end -}}
{{- toJson $urls -}}
{{- end -}}
{{- define "ehr-ledger.kafkaBootstrap" -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.global.kafkaReplicas) -}}
{{- $hosts = append $hosts (printf "%s-kafka-%d.%s-kafka-headless:9092" $.Release.Name $i $.Release.Name) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}
