# The S3 bucket Shipyard keeps releases in (release.store: s3://<bucket>/<prefix>).
#
# What the store relies on: conditional writes (If-None-Match: *) for the ledger, which S3 provides in every
# region; versioning, so an overwritten or deleted blob can be recovered; no public access; encryption at rest;
# and a lifecycle rule that aborts multipart uploads a crashed publish left behind (large weights are uploaded
# in parts; an interrupted upload is invisible but billed until aborted).
#
# The ledger's history cannot be cut or rewritten: Object Lock is enabled on the bucket, and Shipyard writes every
# ledger event under compliance-mode retention (release.object_lock_days; see the `release_settings` output), so
# no one, the account's root included, can delete or replace an event's version before it expires; the bucket
# policy refuses any PUT under ledger/ without If-None-Match: *, so a second version cannot be made either, and
# any DELETE there without a version id, which would put a delete marker over an event and cut the log for every
# reader (deleting a version itself, s3:DeleteObjectVersion, is what compliance-mode retention refuses).
#
#   terraform init -plugin-dir=<local provider mirror>   # or plain `terraform init` with registry access
#   terraform apply -var bucket=my-org-shipyard-releases

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "bucket" {
  description = "Name of the release bucket."
  type        = string
}

variable "region" {
  description = "AWS region of the bucket."
  type        = string
  default     = "us-east-1"
}

variable "abort_incomplete_uploads_after_days" {
  description = "Days after which an unfinished multipart upload is aborted."
  type        = number
  default     = 2
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept."
  type        = number
  default     = 30
}

variable "writer_principals" {
  description = "IAM principal ARNs of the pipeline (watch and release runs), allowed to read and write."
  type        = list(string)
  default     = []
}

provider "aws" {
  region = var.region
}

variable "ledger_lock_days" {
  description = "Days each ledger event stays locked (release.object_lock_days); keep it longer than any audit needs."
  type        = number
  default     = 3650
}

resource "aws_s3_bucket" "releases" {
  bucket              = var.bucket
  object_lock_enabled = true
}

resource "aws_s3_bucket_versioning" "releases" {
  bucket = aws_s3_bucket.releases.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "releases" {
  bucket                  = aws_s3_bucket.releases.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "releases" {
  bucket = aws_s3_bucket.releases.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "releases" {
  bucket = aws_s3_bucket.releases.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "releases" {
  bucket = aws_s3_bucket.releases.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_uploads_after_days
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
  }
}

data "aws_iam_policy_document" "releases" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.releases.arn,
      "${aws_s3_bucket.releases.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "LedgerIsWriteOnce"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.releases.arn}/*ledger/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["true"]
    }
  }

  statement {
    sid       = "LedgerIsNeverCut"
    effect    = "Deny"
    actions   = ["s3:DeleteObject"]
    resources = ["${aws_s3_bucket.releases.arn}/*ledger/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }

  dynamic "statement" {
    for_each = length(var.writer_principals) > 0 ? [1] : []
    content {
      sid       = "PipelineReadWrite"
      effect    = "Allow"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:AbortMultipartUpload"]
      resources = [aws_s3_bucket.releases.arn, "${aws_s3_bucket.releases.arn}/*"]
      principals {
        type        = "AWS"
        identifiers = var.writer_principals
      }
    }
  }
}

resource "aws_s3_bucket_policy" "releases" {
  bucket = aws_s3_bucket.releases.id
  policy = data.aws_iam_policy_document.releases.json
}

output "release_settings" {
  description = "The release section of shipyard.yaml for this bucket."
  value = {
    store            = "s3://${aws_s3_bucket.releases.bucket}/releases"
    object_lock_days = var.ledger_lock_days
  }
}

output "release_store" {
  description = "The value for release.store."
  value       = "s3://${aws_s3_bucket.releases.bucket}/releases"
}
