-- wrk script for the protocol benchmark: the same signed execution POST on every request.
--
-- The body is the JCS-canonical first call of a run (the form the executor sends and the form
-- the Python SDK re-canonicalizes before checking the HMAC), read from RBK_BODY_FILE; the
-- signature header value (t=..&s=..) comes from RBK_SIGNATURE, computed by riveredge-bench just
-- before the run (valid for 300 s). done() prints one machine-readable line that the bench parses.

local body_file = assert(os.getenv("RBK_BODY_FILE"), "RBK_BODY_FILE is not set")
local f = assert(io.open(body_file, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Inngest-Signature"] = assert(os.getenv("RBK_SIGNATURE"), "RBK_SIGNATURE is not set")

done = function(summary, latency, requests)
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "RBK_RESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
      "errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
