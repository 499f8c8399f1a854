"""KServe's own ``InferenceRESTClient``, unmodified, run in an environment with kserve installed.

kserve 0.21 pins pandas<3 and psutil<6, which frugalml's environment does not, so the test runs
this script with the interpreter of a separate virtual environment (``kserve_python`` fixture):
``python kserve_client.py URL BINARY`` with the rows as JSON on stdin; prints the response's id
and output as JSON.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def infer(url: str, rows: np.ndarray, binary: bool):
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        tensor = InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        request = InferRequest("model", [tensor], request_id="k-1",
                               parameters={"binary_data_output": True} if binary else None)
        return await client.infer(url, request, model_name="model")
    finally:
        await client.close()


if __name__ == "__main__":
    url, binary = sys.argv[1], sys.argv[2] == "binary"
    response = asyncio.run(infer(url, np.asarray(json.load(sys.stdin), dtype=np.float64), binary))
    labels = [v.decode() if isinstance(v, bytes) else v for v in response.outputs[0].as_numpy().tolist()]
    print(json.dumps({"id": response.id, "labels": labels, "datatype": response.outputs[0].datatype}))
