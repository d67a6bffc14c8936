#!/usr/bin/env bash
# Entry point of the ppml image for Spark on Kubernetes. Spark starts pods with "driver ARGS" or "executor".
# With PPML_TEE=sgx the pod's parameters go to /run/ppml/launch.json and the measured launcher runs them in
# the Gramine enclave; otherwise (TDX/SNP nodes, confidential containers, none) Spark runs directly.
# Never `set -x`: Spark's RPC secret is in this environment.
set -euo pipefail

role="${1:-}"
case "$role" in
  driver|executor) shift ;;
  *) exec "$@" ;;
esac

if [[ "${PPML_TEE:-none}" == "sgx" ]]; then
  python3 -m ppml.deploy.launch --write "$role" "$@"
  # In-pod AESM with the DCAP plugins: the enclave's quotes never depend on a host socket.
  /opt/intel/sgx-aesm-service/aesm/aesm_service --no-daemon &
  exec gramine-sgx /opt/ppml/gramine/ppml
fi

if [[ "$role" == "driver" ]]; then
  exec "${SPARK_HOME}/bin/spark-submit" --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
    --deploy-mode client "$@"
fi
exec "${JAVA_HOME}/bin/java" "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}" \
  -cp "${SPARK_HOME}/jars/*" org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
  --driver-url "${SPARK_DRIVER_URL}" --executor-id "${SPARK_EXECUTOR_ID}" --cores "${SPARK_EXECUTOR_CORES}" \
  --app-id "${SPARK_APPLICATION_ID}" --hostname "${SPARK_EXECUTOR_POD_IP}" \
  --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" --podName "${SPARK_EXECUTOR_POD_NAME}"
