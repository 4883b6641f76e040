output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.ppd.name
}

output "cluster_location" {
  description = "Zone of the GKE cluster (for gcloud container clusters get-credentials --location)."
  value       = google_container_cluster.ppd.location
}

output "bucket_name" {
  description = "The GCS bucket (export BUCKET=$(terraform output -raw bucket_name))."
  value       = google_storage_bucket.ppd.name
}

output "registry" {
  description = "Artifact Registry path that images are pushed to: <registry>/ppd-cpu and <registry>/ppd-gpu."
  value       = "${google_artifact_registry_repository.ppd.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.ppd.repository_id}"
}

output "ingress_ip" {
  description = "The static IP of the HTTPS endpoint (point your domain's A record here)."
  value       = google_compute_global_address.ingress.address
}

output "serve_service_account" {
  description = "Google service account of the serving pods."
  value       = google_service_account.serve.email
}

output "train_service_account" {
  description = "Google service account of the training pods and MLflow."
  value       = google_service_account.train.email
}

output "ci_service_account" {
  description = "Google service account GitHub Actions impersonate (secret GCP_SERVICE_ACCOUNT)."
  value       = google_service_account.ci.email
}

output "workload_identity_provider" {
  description = "Full name of the GitHub OIDC provider (secret GCP_WORKLOAD_IDENTITY_PROVIDER)."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "redis_host" {
  description = "Address of the Memorystore Redis of the Ray GCS (export REDIS_HOST=$(terraform output -raw redis_host))."
  value       = google_redis_instance.gcs.host
}

output "redis_auth_string" {
  description = "AUTH string of the GCS's Redis, for Secret ppd/ppd-redis (docs/deploy.md, step 10)."
  value       = google_redis_instance.gcs.auth_string
  sensitive   = true
}

output "redis_server_ca" {
  description = "PEM of the CA that signs the GCS Redis's TLS certificate, for Secret ppd/ppd-redis."
  value       = google_redis_instance.gcs.server_ca_certs[0].cert
}
