-- wrk: the operator's readout of one week (path and token from the environment).
wrk.path = os.getenv("READOUT_PATH")
wrk.headers["authorization"] = "Bearer " .. os.getenv("READOUT_TOKEN")
