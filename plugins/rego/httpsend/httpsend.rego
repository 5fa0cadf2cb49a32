# A policy that calls http.send, which OPA leaves to the host and wasmvisor does not offer:
# loading it is refused, naming the builtin, unless a host function named http.send is granted.
package httpsend

status := http.send({"method": "GET", "url": input.url}).status_code
