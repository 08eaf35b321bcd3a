#!/usr/bin/env python3
#
# gen_received.py FILE PREFIX N — N instance-received lines for
# flyt_produce: key PREFIX-i, flow headers with sourceApplicationInstanceId
# PREFIX-i and a random correlationId, the value a small instance.
import json, sys, uuid
path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "w") as f:
    for i in range(n):
        sai = f"{prefix}-{i}"
        headers = {"sourceApplicationId": 2, "correlationId": str(uuid.uuid4()),
                   "sourceApplicationIntegrationId": "sak", "sourceApplicationInstanceId": sai,
                   "fileIds": [], "integrationId": 17, "instanceId": None,
                   "configurationId": None, "archiveInstanceId": None}
        value = {"valuePerKey": {"tittel": f"Søknad {sai}", "saksansvarlig": "ola.nordmann"},
                 "objectCollectionPerKey": {"parter": [{"valuePerKey": {"navn": "Kari Nordmann", "rolle": "søker"},
                                                        "objectCollectionPerKey": {}}]}}
        f.write(sai + "\t" + json.dumps(headers, separators=(",", ":"), ensure_ascii=False) + "\t"
                + json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n")
