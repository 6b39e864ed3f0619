# A thin index; anything longer than a line lives in scripts/.
.PHONY: test up demo down secrets backup restore bench native

test:            ## create .venv, install everything, run the whole test suite
	scripts/test.sh

up:              ## start the gateway (Docker Compose)
	scripts/up.sh

demo:            ## start the gateway with emulated modems
	scripts/up.sh --profile demo

down:            ## stop the stack (data volumes are kept)
	docker compose --profile '*' down

secrets:         ## generate .env secrets (never overwrites existing ones)
	scripts/setup-secrets.sh

backup:          ## pg_dump the database into backups/
	scripts/backup.sh

restore:         ## restore a dump: make restore FILE=backups/....dump
	scripts/restore.sh $(FILE)

native:          ## run the services natively against local Postgres/Mosquitto/Redis
	scripts/run-native.sh

bench:           ## run the benchmarks (see bench/README.md)
	scripts/bench.sh
