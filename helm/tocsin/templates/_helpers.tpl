{{- define "tocsin.fullname" -}}
{{- printf "%s-tocsin" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tocsin.labels" -}}
app.kubernetes.io/name: tocsin
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tocsin.selector" -}}
app.kubernetes.io/name: tocsin
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tocsin.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The container of a service: args, config, secrets, probes on its ops port. */}}
{{- define "tocsin.container" -}}
- name: {{ .service }}
  image: {{ include "tocsin.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args: [{{ .service | quote }}, "--config", "/etc/tocsin/tocsin.toml"]
  env:
    - name: TOCSIN_BUS__URL
      value: {{ .root.Values.nats.url | quote }}
    - name: TOCSIN_LOG_FORMAT
      value: json
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if .root.Values.existingSecret }}
  envFrom:
    - secretRef:
        name: {{ .root.Values.existingSecret }}
  {{- end }}
  ports:
    - name: ops
      containerPort: {{ .port }}
    {{- with .ports }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  livenessProbe:
    httpGet: {path: /healthz, port: ops}
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet: {path: /readyz, port: ops}
    periodSeconds: 5
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/tocsin
      readOnly: true
    - name: tmp
      mountPath: /tmp
    {{- with .mounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "tocsin.podSpec" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .root.Values.terminationGracePeriodSeconds }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "tocsin.fullname" .root }}
  - name: tmp
    emptyDir: {}
{{- with .volumes }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
