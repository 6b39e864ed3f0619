# A thin index; anything longer than a line lives in scripts/.
.PHONY: test lint lock check-lock up demo down secrets backup restore bench native import-seed board-user \
        probe add-modem remove-modem status logs edge centre

test:            ## create .venv, install everything, run the whole test suite
	scripts/test.sh

lint:            ## ruff, ruff format --check, mypy, import-linter (PATHS=... narrows ruff)
	scripts/lint.sh $(PATHS)

lock:            ## regenerate requirements/*.txt (hashed locks) from the pyprojects
	.venv/bin/python scripts/lock.py

check-lock:      ## fail if a pyproject asks for what its lock does not pin
	.venv/bin/python scripts/lock.py --check

up:              ## start the gateway (Docker Compose)
	scripts/up.sh

demo:            ## start the gateway with emulated modems
	scripts/up.sh --profile demo

down:            ## stop the stack (data volumes are kept)
	bash -c ". scripts/lib-compose.sh && compose --profile '*' down"

probe:           ## list the serial ports and what answers on each (modem, IMEI, SIM, signal)
	scripts/probe.sh

add-modem:       ## add a modem: make add-modem PORT=/dev/serial/by-id/... [ID=...] (or EMULATOR=generic)
	scripts/add-modem.sh $(if $(PORT),PORT=$(PORT)) $(if $(ID),ID=$(ID)) $(if $(EMULATOR),EMULATOR=$(EMULATOR))

centre:          ## make this stack the centre of several sites: Postgres and the broker published to edge nodes, TLS only
	NAMES="$(NAMES)" scripts/centre.sh

edge:            ## on an edge node: join the centre and start its workers: make edge CENTRE=https://... TOKEN=... CA=centre.pem PORTS="..."
	CENTRE="$(CENTRE)" TOKEN="$(TOKEN)" CA="$(CA)" PORTS="$(PORTS)" EMULATOR="$(EMULATOR)" \
	  DB_PORT="$(DB_PORT)" MQTT_PORT="$(MQTT_PORT)" scripts/edge.sh

remove-modem:    ## stop and remove a modem: make remove-modem ID=...
	scripts/remove-modem.sh $(if $(ID),ID=$(ID))

status:          ## the stack, the modems and the queue on one screen
	scripts/status.sh

logs:            ## follow the logs: make logs [SERVICE=api]
	scripts/logs.sh $(SERVICE)

secrets:         ## generate .env secrets (never overwrites existing ones)
	scripts/setup-secrets.sh

backup:          ## pg_dump the database into backups/
	scripts/backup.sh

restore:         ## restore a dump: make restore FILE=backups/....dump
	scripts/restore.sh $(FILE)

import-seed:     ## import the seed's SQLite file: make import-seed FILE=sms_gateway.db [ARGS=--dry-run]
	scripts/import-seed.sh $(FILE) $(ARGS)

native:          ## run the services natively against local Postgres/Mosquitto/Redis
	scripts/run-native.sh

bench:           ## run the benchmarks (see bench/README.md)
	scripts/bench.sh

board-user:      ## give a seed board its broker user: make board-user NUMBER=+49... (prints its password once)
	scripts/board-user.py add $(NUMBER)
