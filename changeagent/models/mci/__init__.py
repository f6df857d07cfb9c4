"""The reference MCI model of Change-Agent, faithful number for number (`model=mci`).

`model.py` (MCIModel), `neck.py` (the two bi-temporal interaction necks), `heads.py` (detection branch
and caption decoder), `config.py` (MCIConfig), `convert.py` (Change-Agent checkpoint -> model folder),
`fixture.py` (the reference-output fixture), `cli.py` (`changeagent convert change-agent`).
"""
