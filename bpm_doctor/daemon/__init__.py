"""Parts of `bpm-doctor serve`: the scan loop, finding events and the HTTP server.

`bpm_doctor.serve` wires them together. The main thread scans on an
interval and sends systemd notifications, an HTTP server thread serves
`/metrics` and `/healthz` from the latest scan, and `events` logs each
finding once when it appears and once when it clears.
"""
