"""Simulator of MYSuite FactWSFront (sync CONVERT_NATIVE_XML, "Grandes Asíncrono", Descarga Masiva).

Routes, relative to where the app is mounted (`/mysuite` in `sandbox.app`), paths case-insensitive
as on IIS:

- `/async/factwsfront.asmx`, `/sync/FactWSFront.asmx`: `GET ?WSDL` serves the real WSDL with its
  addresses pointing back at the URL used; `POST` is RequestTransaction (SOAP 1.1 or 1.2).
- `/files/<token>`: the download links of ASYNC_RETRIEVE_DOCUMENT and OBTENER_LINK_ARCHIVO_DM_SAT
  (403 once expired).
- `/_admin/config` (GET, POST partial update or `{"preset": "bench"|"default"}`),
  `/_admin/reset` (POST), `/_admin/counters` (GET).

Environment variables (each knob can also be changed through `POST /_admin/config`):

=====================================  ===========  ==================================================
variable                               default      meaning
=====================================  ===========  ==================================================
SANDBOX_MYSUITE_ENV                    test         `test` (max 4 MiB) or `production` (max 40 MiB)
SANDBOX_MYSUITE_MIN_BYTES              1048576      async Data1 (decoded) must be larger than this
SANDBOX_MYSUITE_MAX_BYTES              (by env)     async Data1 (decoded) maximum, inclusive
SANDBOX_MYSUITE_PROCESSING_BASE_SECONDS 1.0         fixed part of the async processing time
SANDBOX_MYSUITE_SECONDS_PER_MB         0.5          processing time per MiB of decoded Data1
SANDBOX_MYSUITE_FAILURE_RATE           0            share of async requests ending in Status 3
SANDBOX_MYSUITE_SEED                   0            seed of the failure choice and the fault stream
SANDBOX_MYSUITE_LINK_TTL_SECONDS       432000       validity of download links (5 days)
SANDBOX_MYSUITE_LINK_CONTENT           zip          `zip` (one file per ZIP, as the seed says) or `raw`
SANDBOX_MYSUITE_PUBLIC_URL             (request)    base URL for links and WSDL behind a proxy
SANDBOX_MYSUITE_REQUESTOR              (any GUID)   the only Requestor accepted, when set
SANDBOX_MYSUITE_PROCESSOR              (by env)     Response/Processor (TEST-BACK02 in test)
SANDBOX_MYSUITE_LATENCY_MS             0            added latency of every SOAP call
SANDBOX_MYSUITE_HTTP500_RATE           0            share of calls answered HTTP 500 (IIS page)
SANDBOX_MYSUITE_SOAP_FAULT_RATE        0            share answered HTTP 500 with a soap:Fault
SANDBOX_MYSUITE_DROP_RATE              0            share whose connection is dropped, no effect
SANDBOX_MYSUITE_DROP_AFTER_RATE        0            share executed, then the connection dropped
SANDBOX_MYSUITE_MALFORMED_RATE         0            share executed, then answered with broken XML
SANDBOX_MYSUITE_OUTAGE                 0            every call fails (see OUTAGE_MODE)
SANDBOX_MYSUITE_OUTAGE_MODE            503          `503` (IIS page) or `drop` (connection closed)
SANDBOX_MYSUITE_FAULT_TRANSACTIONS     (all)        comma list of transactions the rates apply to
                                                    (`FILES` = downloads, with FAULTS_ON_FILES)
SANDBOX_MYSUITE_FAULTS_ON_FILES        0            apply latency, rates and outage to downloads
SANDBOX_MYSUITE_JSON_LEADING_SPACE     0            reproduce the seed's " " before JSON InternalID
SANDBOX_MYSUITE_DM_TIMELINE            1,2,3        Descarga Masiva SAT states, one step apart
SANDBOX_MYSUITE_DM_STEP_SECONDS        1.0          seconds per step of the timeline
SANDBOX_MYSUITE_DM_CFDI_PER_DAY        20           generated documents per day
SANDBOX_MYSUITE_DM_MAX_CFDI            200000       CFDI per request before 5003
SANDBOX_MYSUITE_DM_MAX_METADATA        1000000      metadata records per request before 5003
SANDBOX_MYSUITE_DM_PACKAGE_SIZE        5000         documents per package
SANDBOX_MYSUITE_DM_MAX_DOWNLOADS       2            links per package before "Maximo de descargas"
SANDBOX_MYSUITE_DM_CANCELLED_RATE      0.05         share of generated documents cancelled
SANDBOX_MYSUITE_BENCH                  0            preset: no size minimum, no processing, no latency
=====================================  ===========  ==================================================
"""

from sandbox.mysuite.app import MySuiteSandbox, create_app
from sandbox.mysuite.config import MySuiteSandboxConfig

__all__ = ["MySuiteSandbox", "MySuiteSandboxConfig", "create_app"]
