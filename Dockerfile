# The Airflow image for docker-compose.yaml: the official image plus our runtime requirements.
# DAGs, include/ and plugins/ are mounted, not copied, so edits show up without a rebuild.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /tmp/requirements.txt
# requirements.txt pins apache-airflow itself, so pip cannot up- or downgrade the image's Airflow.
RUN pip install --no-cache-dir -r /tmp/requirements.txt
ENV PYTHONPATH=/opt/airflow/include
