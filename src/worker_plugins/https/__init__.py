"""The HTTPS transport: a JSON API under ``/v1/``, Server-Sent Events and a web console.

``worker serve --plugins https`` runs it beside gRPC on the same engine and event loop
(``no:grpc`` leaves it alone). Configured by ``[plugins.https]`` (:mod:`.config`): ``listen``
(``127.0.0.1:8443``), ``ca``, ``cert``, ``key``, ``min_tls`` (``"1.3"``; ``"1.2"`` allows
TLS 1.2 with ECDHE and AEAD ciphers only) and caps on bodies, headers, time and streams.
Needs ``aiohttp`` (worker's ``https`` extra).

The API is ``worker.v1.Worker`` in the proto's JSON mapping, one route per RPC::

    POST   /v1/jobs                    Submit   (SubmitRequest -> 201 SubmitResponse)
    GET    /v1/jobs?state=running&...  List     (ListRequest fields as query parameters)
    GET    /v1/jobs/{id}               Get
    DELETE /v1/jobs/{id}               purge one finished job
    POST   /v1/jobs/{id}/stop          Stop     (StopRequest: graceSeconds, force)
    POST   /v1/jobs/{id}/signal|pause|resume|release
    GET    /v1/jobs/{id}/output        Tail     (?stream=stdout|stderr|both&start=...&follow=true;
                                                  raw bytes, or SSE with Accept: text/event-stream)
    GET    /v1/jobs/{id}/events        Watch    (SSE, or one Job per line)
    POST   /v1/purge                   Purge    (PurgeRequest)
    GET    /v1/me, /v1/openapi.json

For example, with the development certificates::

    curl --cacert certs/ca.pem --cert certs/alice.pem --key certs/alice.key \\
         -H 'X-Worker-Client: curl' --json '{"spec": {"command": "/bin/echo", "args": ["hi"]}}' \\
         https://localhost:8443/v1/jobs
    curl ... 'https://localhost:8443/v1/jobs/JOBID/output?follow=true'

Every request needs a client certificate from the CA with the clientAuth usage; its Common
Name is the caller, and the engine's ``authorize`` hooks decide each call, as over gRPC (a
job the caller may not read is 404, like an unknown one). Errors are a status and
``{"code", "message", "field"}`` (:mod:`.errors`). A POST or DELETE needs
``Content-Type: application/json`` and an ``Origin`` naming this server or an
``X-Worker-Client`` header (:mod:`.guard`: a browser sends its certificate to any page).

Modules: :mod:`.plugin` (the hooks), :mod:`.config`, :mod:`.tls` (the ``ssl`` context),
:mod:`.identity` (CN from the peer certificate), :mod:`.server` (the listener),
:mod:`.app` (the application), :mod:`.guard` (identity, CSRF, errors, headers),
:mod:`.routes` (the one route table), :mod:`.jobs` (JSON handlers), :mod:`.streams` (output
and events), :mod:`.params` (query strings), :mod:`.messages` (JSON mapping) with
:mod:`.fast_json` (the same mapping, sooner), :mod:`.call_log` (``worker.calls`` lines),
:mod:`.sse`, :mod:`.errors`, :mod:`.openapi`, :mod:`.console` and ``static/`` (the web
console).
"""
