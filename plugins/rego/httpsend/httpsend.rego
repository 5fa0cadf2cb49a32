# A policy that calls http.send, which OPA leaves to the host and wasmvisor does not offer:
# loading it is refused, naming the builtin.
package httpsend

status := http.send({"method": "GET", "url": input.url}).status_code
