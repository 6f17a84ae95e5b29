-- wrk: pings refused with 400 (an unknown field): parsed in full, never written.
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.path = "/v1/session"
wrk.body = '{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"rejected-ping-1","platform":"linux","node_version":"v20.11.1","primary_framework":"react","user_email":"x@example.com"}'
