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
    {{- if .root.Values.nats.auth.enabled }}
    - name: TOCSIN_BUS__NKEY_SEED_FILE
      value: /var/run/tocsin/nats/seed
    {{- end }}
    {{- if .root.Values.nats.tls.enabled }}
    - name: TOCSIN_BUS__TLS_CA_FILE
      value: /var/run/tocsin/nats-ca/ca.crt
    {{- end }}
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
    {{- if .root.Values.nats.auth.enabled }}
    - name: nats-identity
      mountPath: /var/run/tocsin/nats
      readOnly: true
    {{- end }}
    {{- if .root.Values.nats.tls.enabled }}
    - name: nats-ca
      mountPath: /var/run/tocsin/nats-ca
      readOnly: true
    {{- end }}
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
{{- if .root.Values.nats.auth.enabled }}
  # this service's NATS identity alone (ADR 0029): `tocsin nats-auth --helm` makes the Secrets
  - name: nats-identity
    secret:
      secretName: {{ printf "%s-%s" .root.Values.nats.auth.secretPrefix .service }}
      defaultMode: 0400
      items: [{key: seed, path: seed}]
{{- end }}
{{- if .root.Values.nats.tls.enabled }}
  - name: nats-ca
    secret:
      secretName: {{ required "nats.tls.caSecret: the Secret holding the NATS server's CA (ca.crt)" .root.Values.nats.tls.caSecret }}
      items: [{key: ca.crt, path: ca.crt}]
{{- end }}
{{- with .volumes }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
